// The AdamW optimizer over parameters: clipping by the global norm, the no-decay rule for
// biases and 1-D tensors, bf16 models with fp32 masters, and the NaN/Inf refusal.
#include <cmath>
#include <limits>

#include "common/check.h"
#include "moe/ops/adamw.h"
#include "moe/train/optimizer.h"

namespace moe::train {
namespace {

nn::Parameter make_param(const std::string& name, const Shape& shape, DType dtype, uint64_t seed) {
  nn::Parameter p = nn::Parameter::make(name, shape, dtype, Device::cpu());
  p.value = test::random_normal(shape, DType::f32, seed).to(dtype);
  p.grad = test::random_normal(shape, DType::f32, seed + 1).to(nn::grad_dtype_for(dtype));
  p.grad_is_zero = false;
  return p;
}

TEST(AdamWOptimizer, ClipsByTheGlobalNormAndSkipsDecayOnBiasesAndNorms) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::Parameter w = make_param("layer.weight", {5, 3}, DType::f64, seed);
  nn::Parameter b = make_param("layer.bias", {5}, DType::f64, seed + 10);
  nn::Parameter n = make_param("norm.weight", {3}, DType::f64, seed + 20);
  const Tensor w0 = w.value.clone(), b0 = b.value.clone(), n0 = n.value.clone();
  double sq = 0;
  for (const nn::Parameter* p : {&w, &b, &n})
    for (double g : p->grad.to_double_vector()) sq += g * g;
  const double norm = std::sqrt(sq), clip = 0.5 * norm;  // clipping is active

  OptimizerConfig config;
  config.clip_grad = clip;
  AdamW adam({&w, &b, &n}, config);
  const StepResult r = adam.step(1e-2, 0.1);
  ASSERT_TRUE(r.taken);
  EXPECT_NEAR(r.grad_norm, norm, 1e-12);

  // The same step, parameter by parameter, with the coefficient worked out here.
  const double coeff = clip / (norm + 1e-6);
  for (auto [p, start, decay] : {std::tuple{&w, w0, true}, std::tuple{&b, b0, false},
                                 std::tuple{&n, n0, false}}) {
    SCOPED_TRACE(p->name);
    Tensor expected = start.clone();
    Tensor m = Tensor::zeros(start.shape(), DType::f64), v = Tensor::zeros(start.shape(), DType::f64);
    ops::AdamWStep s;
    s.lr = 1e-2;
    s.weight_decay = decay ? 0.1 : 0.0;
    s.grad_scale = coeff;
    ops::adamw_step(expected, p->grad, m, v, s);
    EXPECT_TRUE(test::close(p->value, expected, 1e-14));
  }
  EXPECT_TRUE(AdamW::decays(w));
  EXPECT_FALSE(AdamW::decays(b));
  EXPECT_FALSE(AdamW::decays(n));
}

TEST(AdamWOptimizer, Bf16ModelKeepsFp32MastersAndCopiesThemBack) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::Parameter w = make_param("w.weight", {7, 9}, DType::bf16, seed);
  OptimizerConfig config;
  config.clip_grad = 0;
  AdamW adam({&w}, config);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(adam.step(1e-3, 0.0).taken);
  const auto state = adam.state();
  ASSERT_EQ(state.size(), 3u);  // exp_avg, exp_avg_sq, master
  EXPECT_EQ(state[2].name, "w.weight.master");
  EXPECT_EQ(state[2].value->dtype(), DType::f32);
  // The bf16 weight is the master rounded; 3 steps of 1e-3 are below bf16's resolution for
  // most weights, which only the fp32 master remembers.
  EXPECT_TRUE(test::equal(w.value, state[2].value->to(DType::bf16)));
  EXPECT_EQ(adam.steps_taken(), 3);
}

TEST(AdamWOptimizer, NonFiniteGradientsLeaveEverythingUnchanged) {
  nn::Parameter w = make_param("w.weight", {4, 4}, DType::f32, 3);
  w.grad.data<float>()[5] = std::numeric_limits<float>::quiet_NaN();
  const Tensor before = w.value.clone();
  AdamW adam({&w}, OptimizerConfig{});
  const StepResult r = adam.step(1e-3, 0.01);
  EXPECT_FALSE(r.taken);
  EXPECT_FALSE(std::isfinite(r.grad_norm));
  EXPECT_TRUE(test::equal(w.value, before));
  EXPECT_EQ(adam.steps_taken(), 0);
  w.grad.data<float>()[5] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(adam.step(1e-3, 0.01).taken);
}

TEST(AdamWOptimizer, PrecisionAwareStatesAreBf16) {
  nn::Parameter w = make_param("w.weight", {4, 4}, DType::f32, 3);
  OptimizerConfig config;
  config.exp_avg_dtype = config.exp_avg_sq_dtype = DType::bf16;
  AdamW adam({&w}, config);
  EXPECT_EQ(adam.state()[0].value->dtype(), DType::bf16);
  EXPECT_TRUE(adam.step(1e-3, 0.0).taken);
  config.exp_avg_dtype = DType::f16;
  EXPECT_THROW(AdamW({&w}, config), Error);
}

}  // namespace
}  // namespace moe::train
