// Elementwise helpers on the CPU: known answers, mixed dtypes computed in fp32, errors.
#include "moe/ops/elementwise.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/check.h"

namespace moe::ops {
namespace {

TEST(Elementwise, AddKnownAnswer) {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5}, {5});
  const Tensor b = Tensor::from_vector(std::vector<float>{10, 20, 30, 40, 50}, {5});
  add_(a, b, 0.5);
  EXPECT_TRUE(test::equal(a, Tensor::from_vector(std::vector<float>{6, 12, 18, 24, 30}, {5})));
  add_(a, b);
  EXPECT_TRUE(test::equal(a, Tensor::from_vector(std::vector<float>{16, 32, 48, 64, 80}, {5})));
}

TEST(Elementwise, AddMixedDtypesRoundsOnce) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor a0 = test::random_normal({13, 7}, DType::f32, seed);
  const Tensor b16 = test::random_normal({13, 7}, DType::bf16, seed + 1);
  // f32 main gradient += bf16 gradient: the same as adding the bf16 values as f32.
  Tensor a = a0.clone();
  add_(a, b16, -2.0);
  Tensor ref = a0.clone();
  add_(ref, b16.to(DType::f32), -2.0);
  EXPECT_TRUE(test::equal(a, ref));
  // bf16 += f32: computed in fp32, rounded once.
  Tensor c = b16.clone();
  add_(c, a0, 0.25);
  Tensor c_ref = b16.to(DType::f32);
  add_(c_ref, a0, 0.25);
  EXPECT_TRUE(test::equal(c, c_ref.to(DType::bf16)));
  // f64 involved: computed in fp64.
  Tensor d = a0.to(DType::f64);
  add_(d, b16, 3.0);
  const auto dv = d.to_vector<double>(), av = a0.to_double_vector(), bv = b16.to_double_vector();
  std::vector<double> expected(dv.size());
  for (size_t i = 0; i < dv.size(); ++i) expected[i] = av[i] + 3.0 * bv[i];
  EXPECT_TRUE(test::close_as(d, Tensor::from_vector(expected, {13, 7}), DType::f64));
}

TEST(Elementwise, ScaleKnownAnswer) {
  Tensor a = Tensor::from_vector(std::vector<double>{1, -2, 0.5}, {3});
  scale_(a, -4.0);
  EXPECT_TRUE(test::equal(a, Tensor::from_vector(std::vector<double>{-4, 8, -2}, {3})));
  Tensor b = Tensor::from_vector(std::vector<float>{1.5f, 3.0f}, {2}).to(DType::bf16);
  scale_(b, 2.0);
  EXPECT_TRUE(test::equal(b.to(DType::f32), Tensor::from_vector(std::vector<float>{3, 6}, {2})));
}

TEST(Elementwise, SumRowsKnownAnswer) {
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2});
  const Tensor s = sum_rows(x);
  EXPECT_EQ(s.dtype(), DType::f32);
  EXPECT_TRUE(test::equal(s, Tensor::from_vector(std::vector<float>{9, 12}, {2})));
  EXPECT_EQ(sum_rows(x.to(DType::f64)).dtype(), DType::f64);
  EXPECT_EQ(sum_rows(x.to(DType::bf16)).dtype(), DType::f32);
  EXPECT_TRUE(
      test::equal(sum_rows(Tensor::empty({0, 3}, DType::f32)), Tensor::zeros({3}, DType::f32)));
}

TEST(Elementwise, EmptyAndErrors) {
  Tensor e = Tensor::empty({0, 4}, DType::f32);
  add_(e, Tensor::empty({0, 4}, DType::f32));
  scale_(e, 2.0);
  Tensor a = Tensor::zeros({3}, DType::f32);
  EXPECT_THROW(add_(a, Tensor::zeros({4}, DType::f32)), moe::Error);
  EXPECT_THROW(add_(a, Tensor::zeros({3}, DType::i32)), moe::Error);
  Tensor i = Tensor::zeros({3}, DType::i64);
  EXPECT_THROW(scale_(i, 2.0), moe::Error);
  EXPECT_THROW(sum_rows(Tensor::zeros({3}, DType::f32)), moe::Error);
  EXPECT_THROW(sum_rows(Tensor::zeros({3, 2}, DType::u8)), moe::Error);
}

}  // namespace
}  // namespace moe::ops
