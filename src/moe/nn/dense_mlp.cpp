#include "moe/nn/dense_mlp.h"

#include "moe/core/rng.h"
#include "moe/nn/param_init.h"
#include "moe/ops/gemm.h"
#include "moe/ops/swiglu.h"

namespace moe::nn {

DenseMLP::DenseMLP(const ModelConfig& config, int64_t layer, const std::string& prefix, DType dtype,
                   Device device, uint64_t seed, const TensorParallel& tp)
    : hidden_(config.hidden_size), tp_(tp), dtype_(dtype) {
  const int64_t H = config.hidden_size, F = config.ffn_hidden_size;
  MOE_CHECK(H > 0, "DenseMLP: --hidden-size must be positive, got ", H);
  MOE_CHECK(F > 0, "DenseMLP (layer ", layer,
            "): --ffn-hidden-size must be positive for a dense "
            "layer, got ",
            F);
  const int64_t Fl = tp.local(F, "--ffn-hidden-size");
  fc1 = Parameter::make(prefix + "gate_up_proj.weight", {2 * Fl, H}, dtype, device);
  fc2 = Parameter::make(prefix + "down_proj.weight", {H, Fl}, dtype, device);
  set_tp_split(fc1, {2 * F, H}, {2, F, H}, 1, tp);
  set_tp_split(fc2, {H, F}, {H, F}, 1, tp);
  fill_normal_box(fc1, parameter_seed(seed, layer, "mlp.fc1"), 0.0, config.init_method_std);
  fill_normal_box(fc2, parameter_seed(seed, layer, "mlp.fc2"), 0.0,
                  output_layer_std(config.init_method_std, config.num_layers));
}

Tensor DenseMLP::forward(const Tensor& x, DenseMLPContext& ctx) const {
  MOE_CHECK(x.dim() >= 1 && x.size(-1) == hidden_, "DenseMLP: x ", shape_str(x.shape()),
            " must end in --hidden-size ", hidden_);
  MOE_CHECK(x.dtype() == dtype_, "DenseMLP: x is ", x.dtype(), " but the parameters are ", dtype_);
  ctx = DenseMLPContext{};
  ctx.input_shape = x.shape();
  const Tensor x_all = tp_enter_forward(x, tp_);
  ctx.x = tp_input_to_save(x.flatten_rows(), x_all.flatten_rows(), tp_);
  ctx.fc1_out = ops::matmul(x_all.flatten_rows(), fc1.value, false, true);
  ctx.activation = ops::swiglu_forward(ctx.fc1_out, Tensor());
  return tp_exit_forward(ops::matmul(ctx.activation, fc2.value, false, true).reshape(x_all.shape()),
                         tp_);
}

Tensor DenseMLP::backward(const Tensor& dy, DenseMLPContext& ctx) {
  MOE_CHECK(ctx.x.defined(), "DenseMLP: backward without a forward");
  check_shape(dy, ctx.input_shape, "DenseMLP::backward", "dy");
  const Tensor dy_all = tp_exit_backward(dy, tp_);
  const Tensor dy2 =
      dy_all.dtype() == dtype_ ? dy_all.flatten_rows() : dy_all.flatten_rows().to(dtype_);
  PendingTensor x_all = tp_saved_input_start(ctx.x, tp_);  // gathered while fc2's backward runs
  ops::gemm(dy2, true, ctx.activation, false, fc2.grad, 1.0f, fc2.take_grad_beta());
  const Tensor d_activation = ops::matmul(dy2, fc2.value);
  const ops::SwigluGrads act = ops::swiglu_backward(d_activation, ctx.fc1_out, Tensor());
  // dx first: its TP reduction runs while fc1's weight gradient is computed.
  PendingTensor dx =
      tp_enter_backward_start(ops::matmul(act.fc1_out, fc1.value).reshape(dy_all.shape()), tp_);
  ops::gemm(act.fc1_out, true, x_all.get(), false, fc1.grad, 1.0f, fc1.take_grad_beta());
  return dx.get();
}

}  // namespace moe::nn
