// Tensor basics, dtype conversions and the counter-based RNG on the CPU.
#include <gtest/gtest.h>

#include <cmath>

#include "common/check.h"
#include "moe/core/allocator.h"
#include "moe/core/rng.h"
#include "moe/core/tensor.h"

namespace moe {
namespace {

TEST(Tensor, ShapesViewsAndCopies) {
  Tensor t = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {3, 2});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.size(-1), 2);
  Tensor middle = t.rows(1, 1);
  EXPECT_EQ(middle.to_vector<float>(), (std::vector<float>{3, 4}));
  middle.fill_(9);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 2, 9, 9, 5, 6}));  // a view
  Tensor copy = t.clone();
  copy.zero_();
  EXPECT_EQ(t.to_vector<float>()[0], 1);  // a copy
  EXPECT_EQ(t.reshape({-1}).shape(), (Shape{6}));
  Tensor empty_rows = t.rows(3, 0);
  EXPECT_EQ(empty_rows.numel(), 0);
}

TEST(Tensor, ErrorsNameTheCause) {
  Tensor t = Tensor::zeros({2, 3}, DType::f32);
  try {
    (void)t.reshape({4, 2});
    FAIL() << "reshape to a wrong size did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)t.data<double>(), Error);
  EXPECT_THROW((void)t.rows(1, 2), Error);
  EXPECT_THROW((void)t.size(2), Error);
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(bf16(1.0f).bits, 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1 + 2^-7: ties go to even (1.0).
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(static_cast<float>(bf16(NAN))));
}

TEST(DType, F16AndFp8RoundTripRepresentableValues) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604644775390625e-08f})
    EXPECT_EQ(static_cast<float>(f16(v)), v) << v;
  for (float v : {0.0f, 1.0f, -1.75f, 448.0f, 0.015625f, 0.001953125f})
    EXPECT_EQ(static_cast<float>(fp8_e4m3(v)), v) << v;
  for (float v : {0.0f, 1.0f, -1.5f, 57344.0f, 1.52587890625e-05f})
    EXPECT_EQ(static_cast<float>(fp8_e5m2(v)), v) << v;
  EXPECT_EQ(static_cast<float>(fp8_e4m3(1000.0f)), 448.0f);  // saturates
  EXPECT_EQ(static_cast<float>(fp8_e4m3(1.0625f)), 1.0f);    // tie to even
  EXPECT_EQ(static_cast<float>(fp8_e4m3(1.1875f)), 1.25f);   // tie to even (up)
}

TEST(DType, CastThroughEveryType) {
  Tensor x = Tensor::from_vector<double>({-3, 0.5, 2, 7}, {4});
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::fp8_e4m3, DType::fp8_e5m2,
                   DType::i64, DType::i32}) {
    Tensor back = x.to(dt).to(DType::f64);
    auto v = back.to_vector<double>();
    EXPECT_EQ(v[0], -3) << dtype_name(dt);
    EXPECT_EQ(v[3], 7) << dtype_name(dt);
  }
}

TEST(DType, DispatchNamesAllowedTypes) {
  try {
    dispatch<DType::f32, DType::f64>(DType::i32, "my_op", [&]<class T>() {});
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("my_op"), std::string::npos);
    EXPECT_NE(msg.find("f32 f64"), std::string::npos) << msg;
  }
}

TEST(Rng, CounterBasedAndWellDistributed) {
  Tensor a = test::random_uniform({10000}, DType::f32, 42, -1, 1);
  Tensor b = test::random_uniform({10000}, DType::f32, 42, -1, 1);
  EXPECT_TRUE(test::equal(a, b));
  // Element i depends only on (seed, i): a shorter draw is a prefix of a longer one.
  Tensor prefix = test::random_uniform({17}, DType::f32, 42, -1, 1);
  EXPECT_TRUE(test::equal(prefix, a.rows(0, 17)));
  Tensor n = test::random_normal({20000}, DType::f64, 7);
  auto v = n.to_vector<double>();
  double mean = 0, var = 0;
  for (double x : v) mean += x;
  mean /= v.size();
  for (double x : v) var += (x - mean) * (x - mean);
  var /= v.size();
  EXPECT_NEAR(mean, 0.0, 0.03);
  EXPECT_NEAR(var, 1.0, 0.05);
  Tensor other = test::random_uniform({10000}, DType::f32, 43, -1, 1);
  EXPECT_GT(test::relative_error(other, a), 0.5);
}

TEST(Allocator, TracksPeakHostMemory) {
  reset_peak_memory(Device::cpu());
  const int64_t before = memory_stats(Device::cpu()).allocated_bytes;
  {
    Tensor big = Tensor::empty({1 << 20}, DType::f32);
    EXPECT_GE(memory_stats(Device::cpu()).allocated_bytes, before + (4 << 20));
  }
  EXPECT_EQ(memory_stats(Device::cpu()).allocated_bytes, before);
  EXPECT_GE(memory_stats(Device::cpu()).peak_allocated_bytes, before + (4 << 20));
}

}  // namespace
}  // namespace moe
