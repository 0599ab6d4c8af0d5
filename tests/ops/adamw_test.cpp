// AdamW and the squared norm on the CPU: the first step's closed form, several steps against a
// plain re-computation of the formulas, bf16 states and the model copy, and bad input.
#include <cmath>
#include <vector>

#include "common/check.h"
#include "moe/ops/adamw.h"

namespace moe {
namespace {

using ops::AdamWStep;

AdamWStep make_step(double lr, double wd, int64_t t, double grad_scale = 1.0) {
  AdamWStep s;
  s.lr = lr;
  s.beta1 = 0.9;
  s.beta2 = 0.95;
  s.eps = 1e-8;
  s.weight_decay = wd;
  s.step = t;
  s.grad_scale = grad_scale;
  return s;
}

// At t = 1, m_hat = g and v_hat = g^2, so p' = p - lr (g / (|g| + eps) + wd p).
TEST(AdamW, FirstStepMovesEachWeightByLrTimesSignPlusDecay) {
  Tensor p = Tensor::from_vector<double>({0.5, -1.0, 2.0, 0.0}, {4});
  const Tensor g = Tensor::from_vector<double>({0.3, -4.0, 1e-3, 2.0}, {4});
  Tensor m = Tensor::zeros({4}, DType::f64), v = Tensor::zeros({4}, DType::f64);
  const std::vector<double> p0 = p.to_double_vector(), g0 = g.to_double_vector();
  const double lr = 0.1, wd = 0.01;
  ops::adamw_step(p, g, m, v, make_step(lr, wd, 1));
  const std::vector<double> got = p.to_double_vector();
  for (int i = 0; i < 4; ++i) {
    const double expected = p0[i] - lr * (g0[i] / (std::abs(g0[i]) + 1e-8) + wd * p0[i]);
    EXPECT_NEAR(got[i], expected, 1e-12) << i;
  }
  EXPECT_NEAR(m.to_double_vector()[1], 0.1 * -4.0, 1e-15);
  EXPECT_NEAR(v.to_double_vector()[1], 0.05 * 16.0, 1e-15);
}

// Several steps with changing gradients, against the formulas written out again here.
TEST(AdamW, StepsMatchThePlainFormulas) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t n = 37;
  Tensor p = test::random_normal({n}, DType::f64, seed);
  Tensor m = Tensor::zeros({n}, DType::f64), v = Tensor::zeros({n}, DType::f64);
  std::vector<double> rp = p.to_double_vector(), rm(n, 0.0), rv(n, 0.0);
  const double lr = 3e-3, wd = 0.1, scale = 0.7;
  for (int64_t t = 1; t <= 5; ++t) {
    const Tensor g = test::random_normal({n}, DType::f64, seed + 100 * t);
    const std::vector<double> gv = g.to_double_vector();
    ops::adamw_step(p, g, m, v, make_step(lr, wd, t, scale));
    for (int64_t i = 0; i < n; ++i) {
      const double gi = scale * gv[i];
      rm[i] = 0.9 * rm[i] + 0.1 * gi;
      rv[i] = 0.95 * rv[i] + 0.05 * gi * gi;
      const double mh = rm[i] / (1 - std::pow(0.9, t)), vh = rv[i] / (1 - std::pow(0.95, t));
      rp[i] -= lr * (mh / (std::sqrt(vh) + 1e-8) + wd * rp[i]);
    }
  }
  const Tensor expected = Tensor::from_vector<double>(rp, {n});
  EXPECT_TRUE(test::close(p, expected, 1e-14, "param"));
  EXPECT_TRUE(test::close(m, Tensor::from_vector<double>(rm, {n}), 1e-14, "exp_avg"));
}

// bf16 states are rounded once per step; the model copy is the master rounded to bf16.
TEST(AdamW, Bf16StatesAndModelCopy) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t n = 41;
  Tensor p = test::random_normal({n}, DType::f32, seed);
  Tensor p_ref = p.clone();
  Tensor m = Tensor::zeros({n}, DType::bf16), v = Tensor::zeros({n}, DType::bf16);
  Tensor m_ref = Tensor::zeros({n}, DType::f32), v_ref = Tensor::zeros({n}, DType::f32);
  Tensor model = Tensor::zeros({n}, DType::bf16);
  for (int64_t t = 1; t <= 3; ++t) {
    const Tensor g = test::random_normal({n}, DType::f32, seed + t);
    ops::adamw_step(p, g, m, v, make_step(1e-2, 0.01, t), model);
    ops::adamw_step(p_ref, g, m_ref, v_ref, make_step(1e-2, 0.01, t));
  }
  EXPECT_TRUE(test::equal(model, p.to(DType::bf16), "model copy"));
  EXPECT_TRUE(test::close_as(m, m_ref, DType::bf16, "bf16 exp_avg"));
  EXPECT_TRUE(test::close_as(p, p_ref, DType::bf16, "param with bf16 states"));
  EXPECT_FALSE(test::equal(p, p_ref)) << "bf16 states changed nothing: the test cannot fail";
}

TEST(AdamW, EmptyTensorIsANoOp) {
  Tensor p = Tensor::zeros({0}, DType::f32), g = Tensor::zeros({0}, DType::f32);
  Tensor m = Tensor::zeros({0}, DType::f32), v = Tensor::zeros({0}, DType::f32);
  EXPECT_NO_THROW(ops::adamw_step(p, g, m, v, make_step(1e-3, 0, 1)));
  EXPECT_EQ(ops::squared_norm(g).to_double_vector()[0], 0.0);
}

TEST(AdamW, BadInputNamesTheProblem) {
  Tensor p = Tensor::zeros({4}, DType::f32), g = Tensor::zeros({4}, DType::f32);
  Tensor m = Tensor::zeros({4}, DType::f32), v = Tensor::zeros({4}, DType::f32);
  Tensor g_short = Tensor::zeros({3}, DType::f32), p16 = Tensor::zeros({4}, DType::bf16);
  Tensor g16 = Tensor::zeros({4}, DType::bf16), m64 = Tensor::zeros({4}, DType::f64);
  EXPECT_THROW(ops::adamw_step(p, g_short, m, v, make_step(1e-3, 0, 1)), Error);
  EXPECT_THROW(ops::adamw_step(p16, g16, m, v, make_step(1e-3, 0, 1)), Error);  // master bf16
  EXPECT_THROW(ops::adamw_step(p, g, m64, v, make_step(1e-3, 0, 1)), Error);
  EXPECT_THROW(ops::adamw_step(p, g, m, v, make_step(1e-3, 0, 0)), Error);  // step 0
  AdamWStep bad_beta = make_step(1e-3, 0, 1);
  bad_beta.beta2 = 1.0;
  EXPECT_THROW(ops::adamw_step(p, g, m, v, bad_beta), Error);
}

TEST(SquaredNorm, SumsSquaresAndFlagsNonFinite) {
  const Tensor x = Tensor::from_vector<float>({3.0f, -4.0f, 12.0f}, {3});
  EXPECT_EQ(ops::squared_norm(x).to_double_vector()[0], 169.0);
  const Tensor with_nan =
      Tensor::from_vector<float>({1.0f, std::nanf(""), 2.0f}, {3});
  EXPECT_FALSE(std::isfinite(ops::squared_norm(with_nan).to_double_vector()[0]));
  const Tensor b = Tensor::from_vector<float>({0.5f, 1.5f}, {2}).to(DType::bf16);
  EXPECT_EQ(ops::squared_norm(b).dtype(), DType::f32);
  EXPECT_EQ(ops::squared_norm(b).to_double_vector()[0], 2.5);
}

}  // namespace
}  // namespace moe
