#include "moe/nn/shared_expert.h"

#include "moe/core/rng.h"
#include "moe/ops/elementwise.h"
#include "moe/ops/gemm.h"
#include "moe/ops/swiglu.h"

namespace moe::nn {

SharedExpert::SharedExpert(const MoEConfig& config, Device device, const TensorParallel& tp)
    : gated_(config.moe_shared_expert_gate), tp_(tp) {
  const int64_t S = config.moe_shared_expert_intermediate_size, H = config.hidden_size;
  MOE_CHECK(S > 0, "SharedExpert needs --moe-shared-expert-intermediate-size > 0");
  const int64_t Sl = tp.local(S, "--moe-shared-expert-intermediate-size");
  fc1 = Parameter::make("shared_expert.fc1", {2 * Sl, H}, config.params_dtype, device);
  fc2 = Parameter::make("shared_expert.fc2", {H, Sl}, config.params_dtype, device);
  set_tp_split(fc1, {2 * S, H}, {2, S, H}, 1, tp);
  set_tp_split(fc2, {H, S}, {H, S}, 1, tp);
  fill_normal_box(fc1, config.seed ^ 0x53'46'31ULL, 0.0, config.init_method_std);
  fill_normal_box(fc2, config.seed ^ 0x53'46'32ULL, 0.0, config.init_method_std);
  if (gated_) {
    gate = Parameter::make("shared_expert.gate", {1, H}, config.params_dtype, device);
    fill_normal(gate.value, config.seed ^ 0x53'47ULL, 0.0, config.init_method_std);
    set_tp_replicated(gate, tp, /*partial_grad=*/true);
  }
}

Tensor SharedExpert::forward(const Tensor& x, SharedExpertContext& ctx) {
  ctx = SharedExpertContext{};
  ctx.x = x;
  const Tensor x_all = tp_enter_forward(x, tp_);
  ctx.fc1_out = ops::matmul(x_all, fc1.value, false, true);
  ctx.activation = ops::swiglu_forward(ctx.fc1_out, Tensor());
  ctx.output = tp_exit_forward(ops::matmul(ctx.activation, fc2.value, false, true), tp_);
  if (!gated_) return ctx.output;
  ctx.gate_logits = ops::matmul(x, gate.value, false, true);  // [T, 1]
  return ops::sigmoid_gate_forward(ctx.output, ctx.gate_logits);
}

Tensor SharedExpert::backward(const Tensor& grad_y, SharedExpertContext& ctx) {
  Tensor d_output = grad_y.to(ctx.x.dtype());
  Tensor d_gate_x;  // the gate's part of dx (this rank's tokens)
  if (gated_) {
    ops::SigmoidGateGrads g = ops::sigmoid_gate_backward(d_output, ctx.output, ctx.gate_logits);
    d_output = g.out;
    const Tensor d_gate = g.gate_logits.to(ctx.x.dtype());
    ops::gemm(d_gate, true, ctx.x, false, gate.grad, 1.0f, gate.take_grad_beta());
    d_gate_x = ops::matmul(d_gate, gate.value);
  }
  const Tensor d_output_all = tp_exit_backward(d_output, tp_);
  PendingTensor x_all = tp_saved_input_start(ctx.x, tp_);  // gathered while fc2's backward runs
  ops::gemm(d_output_all, true, ctx.activation, false, fc2.grad, 1.0f, fc2.take_grad_beta());
  const Tensor d_activation = ops::matmul(d_output_all, fc2.value);
  const ops::SwigluGrads act = ops::swiglu_backward(d_activation, ctx.fc1_out, Tensor());
  // dx first: its TP reduction runs while fc1's weight gradient is computed.
  PendingTensor dx_reduced = tp_enter_backward_start(ops::matmul(act.fc1_out, fc1.value), tp_);
  ops::gemm(act.fc1_out, true, x_all.get(), false, fc1.grad, 1.0f, fc1.take_grad_beta());
  Tensor dx = dx_reduced.get();
  if (d_gate_x.defined()) ops::add_(dx, d_gate_x);
  return dx;
}

}  // namespace moe::nn
