// CUDA RMSNorm against the CPU reference on fresh random inputs: f32, bf16 (against the CPU f32
// reference on the same bf16-rounded inputs), f16, f64; odd widths (H = 259, scalar path), wide
// rows (H = 4096: 16-byte packs, several warps per row), the QK-norm view [T, heads, head_dim],
// misaligned views, zero rows; dw written and accumulated; bitwise determinism run to run.
#include <gtest/gtest.h>

#include "common/check.h"
#include "moe/ops/rmsnorm.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;
DType grad_dtype(DType dt) {
  return test::reference_dtype(dt);
}



TEST(RmsNormCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (const Shape& shape : {Shape{257, 259}, Shape{257, 4096}, Shape{257, 3, 128},
                               Shape{0, 259}, Shape{1, 8}}) {
      for (bool misaligned : {false, true}) {
        for (bool accumulate : {false, true}) {
          SCOPED_TRACE(testing::Message() << dtype_name(dt) << " " << shape_str(shape)
                                          << (misaligned ? " misaligned" : "")
                                          << (accumulate ? " accumulate" : " write"));
          const int64_t hidden = shape.back();
          const test::PairedInput x = test::paired_input(shape, dt, ++s, misaligned, 2.0);
          const test::PairedInput w = test::paired_input({hidden}, dt, ++s, misaligned);
          const test::PairedInput dy = test::paired_input(shape, dt, ++s, misaligned);
          const double eps = 1e-6;
          const RmsNormOutput out = rmsnorm_forward(x.dev, w.dev, eps);
          const RmsNormOutput ref = rmsnorm_forward(x.ref, w.ref, eps);
          EXPECT_TRUE(out.y.is_cuda());
          EXPECT_EQ(out.y.dtype(), dt);
          EXPECT_TRUE(test::close_as(host(out.y), ref.y, dt, "y"));
          EXPECT_TRUE(test::close_as(host(out.rstd), ref.rstd, test::reference_dtype(dt), "rstd"));

          const Tensor start = test::random_normal({hidden}, grad_dtype(dt), ++s);
          Tensor dw = gpu(start);
          Tensor dw_ref = start.clone();
          const Tensor dx = rmsnorm_backward(dy.dev, x.dev, w.dev, out.rstd, dw, accumulate);
          const Tensor dx_ref = rmsnorm_backward(dy.ref, x.ref, w.ref, ref.rstd, dw_ref, accumulate);
          EXPECT_TRUE(test::close_as(host(dx), dx_ref, dt, "dx"));
          // dw is summed in fp32 (fp64) from the same values in another order.
          EXPECT_TRUE(test::close_as(host(dw), dw_ref, grad_dtype(dt), "dw"));
        }
      }
    }
  }
}

TEST(RmsNormCuda, BitwiseDeterministic) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    // Many rows: several row chunks in the dw reduction.
    const Tensor x = gpu(test::random_normal({4099, 259}, dt, seed));
    const Tensor w = gpu(test::random_normal({259}, dt, seed + 1));
    const Tensor dy = gpu(test::random_normal({4099, 259}, dt, seed + 2));
    Tensor dw[2] = {Tensor::zeros({259}, DType::f32, Device::cuda()),
                    Tensor::zeros({259}, DType::f32, Device::cuda())};
    Tensor y[2], dx[2];
    for (int run = 0; run < 2; ++run) {
      const RmsNormOutput out = rmsnorm_forward(x, w, 1e-5);
      y[run] = out.y;
      dx[run] = rmsnorm_backward(dy, x, w, out.rstd, dw[run], true);
    }
    EXPECT_TRUE(test::equal(host(y[0]), host(y[1])));
    EXPECT_TRUE(test::equal(host(dx[0]), host(dx[1])));
    EXPECT_TRUE(test::equal(host(dw[0]), host(dw[1])));
  }
}

}  // namespace
}  // namespace moe::ops
