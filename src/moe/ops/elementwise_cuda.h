// Internal: CUDA launchers of the elementwise helpers (elementwise_cuda.cu).
#pragma once

#include "moe/core/tensor.h"

namespace moe::ops::detail {

void add_cuda(Tensor& a, const Tensor& b, double alpha);
void scale_cuda(Tensor& a, double s);
void sum_rows_cuda(const Tensor& x, Tensor& out);  // out [H], written

}  // namespace moe::ops::detail
