#include "moe/nn/dense_mlp.h"

#include "moe/core/rng.h"
#include "moe/nn/param_init.h"
#include "moe/ops/gemm.h"
#include "moe/ops/swiglu.h"

namespace moe::nn {

DenseMLP::DenseMLP(const ModelConfig& config, int64_t layer, const std::string& prefix, DType dtype,
                   Device device, uint64_t seed)
    : hidden_(config.hidden_size), dtype_(dtype) {
  const int64_t H = config.hidden_size, F = config.ffn_hidden_size;
  MOE_CHECK(H > 0, "DenseMLP: --hidden-size must be positive, got ", H);
  MOE_CHECK(F > 0, "DenseMLP (layer ", layer,
            "): --ffn-hidden-size must be positive for a dense "
            "layer, got ",
            F);
  fc1 = Parameter::make(prefix + "gate_up_proj.weight", {2 * F, H}, dtype, device);
  fc2 = Parameter::make(prefix + "down_proj.weight", {H, F}, dtype, device);
  fill_normal(fc1.value, parameter_seed(seed, layer, "mlp.fc1"), 0.0, config.init_method_std);
  fill_normal(fc2.value, parameter_seed(seed, layer, "mlp.fc2"), 0.0,
              output_layer_std(config.init_method_std, config.num_layers));
}

Tensor DenseMLP::forward(const Tensor& x, DenseMLPContext& ctx) const {
  MOE_CHECK(x.dim() >= 1 && x.size(-1) == hidden_, "DenseMLP: x ", shape_str(x.shape()),
            " must end in --hidden-size ", hidden_);
  MOE_CHECK(x.dtype() == dtype_, "DenseMLP: x is ", x.dtype(), " but the parameters are ", dtype_);
  ctx = DenseMLPContext{};
  ctx.input_shape = x.shape();
  ctx.x = x.flatten_rows();
  ctx.fc1_out = ops::matmul(ctx.x, fc1.value, false, true);
  ctx.activation = ops::swiglu_forward(ctx.fc1_out, Tensor());
  return ops::matmul(ctx.activation, fc2.value, false, true).reshape(ctx.input_shape);
}

Tensor DenseMLP::backward(const Tensor& dy, DenseMLPContext& ctx) {
  MOE_CHECK(ctx.x.defined(), "DenseMLP: backward without a forward");
  check_shape(dy, ctx.input_shape, "DenseMLP::backward", "dy");
  const Tensor dy2 = dy.dtype() == dtype_ ? dy.flatten_rows() : dy.flatten_rows().to(dtype_);
  ops::gemm(dy2, true, ctx.activation, false, fc2.grad, 1.0f, fc2.take_grad_beta());
  const Tensor d_activation = ops::matmul(dy2, fc2.value);
  const ops::SwigluGrads act = ops::swiglu_backward(d_activation, ctx.fc1_out, Tensor());
  ops::gemm(act.fc1_out, true, ctx.x, false, fc1.grad, 1.0f, fc1.take_grad_beta());
  return ops::matmul(act.fc1_out, fc1.value).reshape(ctx.input_shape);
}

}  // namespace moe::nn
