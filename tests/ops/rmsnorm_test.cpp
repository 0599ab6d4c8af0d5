// RMSNorm on the CPU: a known answer by hand, fp64 finite-difference gradients (dx and dw, with
// leading dims and the QK-norm view), dw accumulation, bf16 in fp32, empty input, errors.
#include "moe/ops/rmsnorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"

namespace moe::ops {
namespace {

TEST(RmsNorm, KnownAnswer) {
  // Row [3, 4]: mean square 12.5; row [1, -1]: mean square 1.
  const double eps = 0.5;
  const Tensor x = Tensor::from_vector(std::vector<double>{3, 4, 1, -1}, {2, 2});
  const Tensor w = Tensor::from_vector(std::vector<double>{2, -0.5}, {2});
  const RmsNormOutput out = rmsnorm_forward(x, w, eps);
  const double r0 = 1 / std::sqrt(12.5 + eps), r1 = 1 / std::sqrt(1 + eps);
  EXPECT_TRUE(test::close_as(out.y,
                             Tensor::from_vector(std::vector<double>{3 * r0 * 2, 4 * r0 * -0.5,
                                                                     1 * r1 * 2, -1 * r1 * -0.5},
                                                 {2, 2}),
                             DType::f64, "y"));
  EXPECT_TRUE(test::close_as(out.rstd, Tensor::from_vector(std::vector<double>{r0, r1}, {2}),
                             DType::f64, "rstd"));
  EXPECT_EQ(out.rstd.dtype(), DType::f64);
}

TEST(RmsNorm, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  // [2, 3, 7]: leading dims flattened; also the QK-norm view [T, heads, head_dim].
  for (const Shape& shape : {Shape{2, 3, 7}, Shape{5, 1}, Shape{4, 16}}) {
    SCOPED_TRACE(shape_str(shape));
    const int64_t hidden = shape.back();
    Tensor x = test::random_normal(shape, DType::f64, seed);
    Tensor w = test::random_normal({hidden}, DType::f64, seed + 1);
    const Tensor probe = test::random_normal(shape, DType::f64, seed + 2);
    // H = 1: y = x w / sqrt(x^2 + eps) is flat unless eps is comparable to x^2.
    const double eps = hidden == 1 ? 0.5 : 1e-5;
    auto loss = [&] { return test::dot(rmsnorm_forward(x, w, eps).y, probe); };
    const RmsNormOutput out = rmsnorm_forward(x, w, eps);
    Tensor dw = Tensor::zeros({hidden}, DType::f64);
    const Tensor dx = rmsnorm_backward(probe, x, w, out.rstd, dw, false);
    EXPECT_EQ(dx.shape(), shape);
    EXPECT_TRUE(test::close(dx, test::numerical_gradient(loss, x), test::kGradCheckTol, "dx"));
    EXPECT_TRUE(test::close(dw, test::numerical_gradient(loss, w), test::kGradCheckTol, "dw"));
  }
}

TEST(RmsNorm, WeightGradientAccumulates) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor x = test::random_normal({6, 10}, DType::f64, seed);
  const Tensor w = test::random_normal({10}, DType::f64, seed + 1);
  const Tensor dy = test::random_normal({6, 10}, DType::f64, seed + 2);
  const Tensor start = test::random_normal({10}, DType::f64, seed + 3);
  const RmsNormOutput out = rmsnorm_forward(x, w, 1e-6);
  Tensor written = Tensor::full({10}, NAN, DType::f64);  // never read when !accumulate
  rmsnorm_backward(dy, x, w, out.rstd, written, false);
  Tensor accumulated = start.clone();
  rmsnorm_backward(dy, x, w, out.rstd, accumulated, true);
  std::vector<double> expected = start.to_vector<double>();
  const std::vector<double> g = written.to_vector<double>();
  for (size_t i = 0; i < expected.size(); ++i) expected[i] += g[i];
  EXPECT_TRUE(test::close_as(accumulated, Tensor::from_vector(expected, {10}), DType::f64));
}

TEST(RmsNorm, Bf16ComputesInFp32WithFp32WeightGradient) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor x = test::random_normal({9, 3, 24}, DType::bf16, seed);
  const Tensor w = test::random_normal({24}, DType::bf16, seed + 1);
  const Tensor dy = test::random_normal({9, 3, 24}, DType::bf16, seed + 2);
  const RmsNormOutput out = rmsnorm_forward(x, w, 1e-6);
  const RmsNormOutput ref = rmsnorm_forward(x.to(DType::f32), w.to(DType::f32), 1e-6);
  EXPECT_EQ(out.rstd.dtype(), DType::f32);
  EXPECT_TRUE(test::equal(out.y, ref.y.to(DType::bf16))) << "one rounding of the fp32 value";
  EXPECT_TRUE(test::equal(out.rstd, ref.rstd));
  Tensor dw = Tensor::zeros({24}, DType::f32);
  Tensor dw_ref = Tensor::zeros({24}, DType::f32);
  const Tensor dx = rmsnorm_backward(dy, x, w, out.rstd, dw, true);
  const Tensor dx_ref =
      rmsnorm_backward(dy.to(DType::f32), x.to(DType::f32), w.to(DType::f32), ref.rstd, dw_ref, true);
  EXPECT_TRUE(test::equal(dx, dx_ref.to(DType::bf16)));
  EXPECT_TRUE(test::equal(dw, dw_ref));
  // Against fp64 on the same rounded values.
  const RmsNormOutput r64 = rmsnorm_forward(x.to(DType::f64), w.to(DType::f64), 1e-6);
  EXPECT_TRUE(test::close_as(out.y, r64.y, DType::bf16, "y vs f64"));
}

TEST(RmsNorm, EmptyRows) {
  const Tensor x = Tensor::empty({0, 8}, DType::f32);
  const Tensor w = Tensor::full({8}, 1.0, DType::f32);
  const RmsNormOutput out = rmsnorm_forward(x, w, 1e-6);
  EXPECT_EQ(out.y.shape(), (Shape{0, 8}));
  EXPECT_EQ(out.rstd.shape(), (Shape{0}));
  Tensor dw = Tensor::full({8}, 3.0, DType::f32);
  EXPECT_EQ(rmsnorm_backward(x, x, w, out.rstd, dw, true).shape(), (Shape{0, 8}));
  EXPECT_TRUE(test::equal(dw, Tensor::full({8}, 3.0, DType::f32)));
  rmsnorm_backward(x, x, w, out.rstd, dw, false);
  EXPECT_TRUE(test::equal(dw, Tensor::zeros({8}, DType::f32)));
}

TEST(RmsNorm, RejectsBadInput) {
  const Tensor x = Tensor::zeros({4, 6}, DType::f32);
  const Tensor w = Tensor::zeros({6}, DType::f32);
  EXPECT_THROW(rmsnorm_forward(x, Tensor::zeros({5}, DType::f32), 1e-6), moe::Error);
  EXPECT_THROW(rmsnorm_forward(x, Tensor::zeros({6}, DType::bf16), 1e-6), moe::Error);
  EXPECT_THROW(rmsnorm_forward(Tensor::zeros({4, 6}, DType::i32), w, 1e-6), moe::Error);
  EXPECT_THROW(rmsnorm_forward(x, w, -1.0), moe::Error);
  EXPECT_THROW(rmsnorm_forward(Tensor::zeros({4, 0}, DType::f32), Tensor::zeros({0}, DType::f32), 0),
               moe::Error);
  const RmsNormOutput out = rmsnorm_forward(x, w, 1e-6);
  Tensor dw = Tensor::zeros({6}, DType::f32);
  Tensor dw_bad = Tensor::zeros({6}, DType::f64);
  EXPECT_THROW(rmsnorm_backward(Tensor::zeros({4, 5}, DType::f32), x, w, out.rstd, dw, true),
               moe::Error);
  EXPECT_THROW(rmsnorm_backward(x, x, w, Tensor::zeros({3}, DType::f32), dw, true), moe::Error);
  EXPECT_THROW(rmsnorm_backward(x, x, w, out.rstd, dw_bad, true), moe::Error);
  // bf16 inputs need an f32 weight gradient.
  const Tensor xb = x.to(DType::bf16), wb = w.to(DType::bf16);
  Tensor dwb = Tensor::zeros({6}, DType::bf16);
  EXPECT_THROW(rmsnorm_backward(xb, xb, wb, out.rstd, dwb, true), moe::Error);
}

}  // namespace
}  // namespace moe::ops
