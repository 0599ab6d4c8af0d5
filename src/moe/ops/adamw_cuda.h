// Internal: CUDA launchers of the optimizer math (adamw_cuda.cu).
#pragma once

#include "moe/core/tensor.h"
#include "moe/ops/adamw.h"

namespace moe::ops::detail {

// The coefficients every element uses, computed once on the host.
struct AdamWCoefficients {
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  float bias_correction1, bias_correction2;  // 1 - beta^t
};

void adamw_step_cuda(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                     const AdamWCoefficients& c, Tensor& model_param);
void squared_norm_cuda(const Tensor& x, Tensor& out);  // out 0-d, written

}  // namespace moe::ops::detail
