// CUDA elementwise helpers against the CPU reference: same and mixed dtypes, odd sizes (the
// scalar tail), misaligned views (the scalar path), column sums over few and many rows.
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "common/check.h"
#include "moe/ops/elementwise.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;


TEST(ElementwiseCuda, AddMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  const std::vector<std::pair<DType, DType>> pairs{
      {DType::f32, DType::f32},  {DType::bf16, DType::bf16}, {DType::f32, DType::bf16},
      {DType::bf16, DType::f32}, {DType::f64, DType::f64},   {DType::f16, DType::f16},
      {DType::f64, DType::bf16}};
  for (auto [da, db] : pairs) {
    for (Shape shape : {Shape{257, 259}, Shape{64, 4096}, Shape{0, 3}, Shape{5}}) {
      for (bool misaligned : {false, true}) {
        SCOPED_TRACE(testing::Message() << dtype_name(da) << " += " << dtype_name(db) << " "
                                        << shape_str(shape) << (misaligned ? " misaligned" : ""));
        const Tensor a = test::random_normal(shape, DType::f32, ++s).to(da);
        const Tensor b = test::random_normal(shape, DType::f32, ++s).to(db);
        Tensor a_gpu = misaligned ? test::misaligned_gpu(gpu(a)) : gpu(a);
        add_(a_gpu, gpu(b), -0.75);
        // Reference in the compute type, on the same values; the result is rounded once to a's
        // dtype, so a's dtype sets the tolerance.
        const DType ref = da == DType::f64 || db == DType::f64 ? DType::f64 : DType::f32;
        Tensor expected = a.to(ref);
        add_(expected, b.to(ref), -0.75);
        EXPECT_TRUE(test::close_as(host(a_gpu), expected, da));
        EXPECT_EQ(a_gpu.dtype(), da);
      }
    }
  }
}

TEST(ElementwiseCuda, ScaleMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (bool misaligned : {false, true}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << (misaligned ? " misaligned" : ""));
      const Tensor a = test::random_normal({257, 259}, DType::f32, seed).to(dt);
      Tensor a_gpu = misaligned ? test::misaligned_gpu(gpu(a)) : gpu(a);
      scale_(a_gpu, 1.7);
      Tensor expected = a.to(dt == DType::f64 ? DType::f64 : DType::f32);
      scale_(expected, 1.7);
      EXPECT_TRUE(test::close_as(host(a_gpu), expected, dt));
    }
  }
}

TEST(ElementwiseCuda, SumRowsMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
    for (Shape shape :
         {Shape{257, 259}, Shape{5000, 64}, Shape{3, 4096}, Shape{0, 7}, Shape{1, 1}}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << " " << shape_str(shape));
      const Tensor x = test::random_normal(shape, DType::f32, ++s).to(dt);
      const Tensor got = sum_rows(gpu(x));
      EXPECT_TRUE(got.is_cuda());
      // Accumulated in fp32 (fp64 for f64) on the GPU, in fp64 on the CPU.
      EXPECT_TRUE(
          test::close_as(host(got), sum_rows(x), dt == DType::f64 ? DType::f64 : DType::f32));
    }
  }
}

}  // namespace
}  // namespace moe::ops
