#include "moe/nn/shared_expert.h"

#include "moe/core/rng.h"
#include "moe/ops/elementwise.h"
#include "moe/ops/gemm.h"
#include "moe/ops/swiglu.h"

namespace moe::nn {

SharedExpert::SharedExpert(const MoEConfig& config, Device device)
    : gated_(config.moe_shared_expert_gate) {
  const int64_t S = config.moe_shared_expert_intermediate_size, H = config.hidden_size;
  MOE_CHECK(S > 0, "SharedExpert needs --moe-shared-expert-intermediate-size > 0");
  fc1 = Parameter::make("shared_expert.fc1", {2 * S, H}, config.params_dtype, device);
  fc2 = Parameter::make("shared_expert.fc2", {H, S}, config.params_dtype, device);
  fill_normal(fc1.value, config.seed ^ 0x53'46'31ULL, 0.0, config.init_method_std);
  fill_normal(fc2.value, config.seed ^ 0x53'46'32ULL, 0.0, config.init_method_std);
  if (gated_) {
    gate = Parameter::make("shared_expert.gate", {1, H}, config.params_dtype, device);
    fill_normal(gate.value, config.seed ^ 0x53'47ULL, 0.0, config.init_method_std);
  }
}

Tensor SharedExpert::forward(const Tensor& x, SharedExpertContext& ctx) {
  ctx = SharedExpertContext{};
  ctx.x = x;
  ctx.fc1_out = ops::matmul(x, fc1.value, false, true);
  ctx.activation = ops::swiglu_forward(ctx.fc1_out, Tensor());
  ctx.output = ops::matmul(ctx.activation, fc2.value, false, true);
  if (!gated_) return ctx.output;
  ctx.gate_logits = ops::matmul(x, gate.value, false, true);  // [T, 1]
  return ops::sigmoid_gate_forward(ctx.output, ctx.gate_logits);
}

Tensor SharedExpert::backward(const Tensor& grad_y, SharedExpertContext& ctx) {
  Tensor d_output = grad_y.to(ctx.x.dtype());
  Tensor dx = Tensor::empty(ctx.x.shape(), ctx.x.dtype(), ctx.x.device());
  bool dx_written = false;
  if (gated_) {
    ops::SigmoidGateGrads g = ops::sigmoid_gate_backward(d_output, ctx.output, ctx.gate_logits);
    d_output = g.out;
    const Tensor d_gate = g.gate_logits.to(ctx.x.dtype());
    ops::gemm(d_gate, true, ctx.x, false, gate.grad, 1.0f, gate.take_grad_beta());
    ops::gemm(d_gate, false, gate.value, false, dx);
    dx_written = true;
  }
  ops::gemm(d_output, true, ctx.activation, false, fc2.grad, 1.0f, fc2.take_grad_beta());
  const Tensor d_activation = ops::matmul(d_output, fc2.value);
  const ops::SwigluGrads act = ops::swiglu_backward(d_activation, ctx.fc1_out, Tensor());
  ops::gemm(act.fc1_out, true, ctx.x, false, fc1.grad, 1.0f, fc1.take_grad_beta());
  ops::gemm(act.fc1_out, false, fc1.value, false, dx, 1.0f, dx_written ? 1.0f : 0.0f);
  return dx;
}

}  // namespace moe::nn
