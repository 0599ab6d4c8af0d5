// CUDA tensors against the CPU: copies, casts, fills, and the RNG giving the same numbers.
#include <gtest/gtest.h>

#include "common/check.h"
#include "moe/core/allocator.h"
#include "moe/core/rng.h"
#include "moe/core/tensor.h"

namespace moe {
namespace {

TEST(TensorCuda, RoundTripAndCasts) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Tensor host = test::random_normal({257, 3}, DType::f32, seed);
  Tensor dev = host.to(Device::cuda());
  EXPECT_TRUE(test::equal(dev.to(Device::cpu()), host));
  for (DType dt : {DType::f64, DType::bf16, DType::f16, DType::fp8_e4m3, DType::fp8_e5m2,
                   DType::i32}) {
    EXPECT_TRUE(test::equal(dev.to(dt).to(Device::cpu()), host.to(dt))) << dtype_name(dt);
  }
  dev.fill_(2.5);
  EXPECT_TRUE(test::equal(dev.to(Device::cpu()), Tensor::full({257, 3}, 2.5, DType::f32)));
}

TEST(TensorCuda, RngMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
    Tensor cpu_u = test::random_uniform({1001}, dt, seed, -0.5, 2.0);
    Tensor gpu_u = test::random_uniform({1001}, dt, seed, -0.5, 2.0, Device::cuda());
    EXPECT_TRUE(test::equal(gpu_u.to(Device::cpu()), cpu_u)) << dtype_name(dt);
    Tensor cpu_n = test::random_normal({1001}, dt, seed);
    Tensor gpu_n = test::random_normal({1001}, dt, seed, Device::cuda());
    EXPECT_TRUE(test::close(gpu_n.to(Device::cpu()), cpu_n, 1e-15)) << dtype_name(dt);
  }
}

TEST(TensorCuda, CachingAllocatorReusesBlocks) {
  MOE_REQUIRE_GPU();
  { Tensor warm = Tensor::empty({1 << 20}, DType::f32, Device::cuda()); }
  const int64_t mallocs = memory_stats(Device::cuda()).num_device_mallocs;
  for (int i = 0; i < 10; ++i) Tensor t = Tensor::empty({1 << 20}, DType::f32, Device::cuda());
  EXPECT_EQ(memory_stats(Device::cuda()).num_device_mallocs, mallocs);
}

}  // namespace
}  // namespace moe
