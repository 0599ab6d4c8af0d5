// Internal: CUDA launchers of RMSNorm (rmsnorm_cuda.cu). Plain C++ so rmsnorm_cpu.cpp can call
// them after checking the arguments and allocating the outputs. x, y, dx are [N, H] views.
#pragma once

#include "moe/core/tensor.h"

namespace moe::ops::detail {

void rmsnorm_forward_cuda(const Tensor& x, const Tensor& weight, double eps, Tensor& y,
                          Tensor& rstd);
void rmsnorm_backward_cuda(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                           const Tensor& rstd, Tensor& dx, Tensor& grad_weight, bool accumulate);

}  // namespace moe::ops::detail
