#include "moe/nn/rmsnorm_module.h"

#include "moe/ops/rmsnorm.h"

namespace moe::nn {

RMSNorm::RMSNorm(std::string name, int64_t size, double eps_, DType dtype, Device device)
    : eps(eps_) {
  MOE_CHECK(size > 0, "RMSNorm ", name, ": size must be positive, got ", size);
  weight = Parameter::make(std::move(name), {size}, dtype, device);
  weight.value.fill_(1.0);
}

Tensor RMSNorm::forward(const Tensor& x, RMSNormContext& ctx) const {
  ops::RmsNormOutput out = ops::rmsnorm_forward(x, weight.value, eps);
  ctx.x = x;
  ctx.rstd = std::move(out.rstd);
  return std::move(out.y);
}

Tensor RMSNorm::backward(const Tensor& dy, RMSNormContext& ctx) {
  MOE_CHECK(ctx.x.defined(), "RMSNorm ", weight.name, ": backward without a forward");
  const bool accumulate = weight.take_grad_beta() != 0.0f;
  return ops::rmsnorm_backward(dy, ctx.x, weight.value, ctx.rstd, weight.grad, accumulate);
}

}  // namespace moe::nn
