// Small in-place and reduction helpers on whole tensors, for gradient bookkeeping (adding a
// partial gradient into another, scaling by a loss scale) and for tests.
//
//   add_(a, b, alpha):  a += alpha * b   (same shape; a and b any of f64, f32, bf16, f16, also
//                                         mixed, e.g. f32 main gradients += bf16 gradients)
//   scale_(a, s):       a *= s           (f64, f32, bf16, f16)
//   sum_rows(x):        [N, H] -> [H], column sums s_h = sum_n x[n, h]; f64 for f64 input,
//                       f32 otherwise
// Arithmetic runs in fp32 (fp64 when a tensor involved is f64); the result is rounded once to
// the destination dtype. No host synchronisation; sum_rows on CUDA sums in a fixed order
// (deterministic).
#pragma once

#include "moe/core/tensor.h"

namespace moe::ops {

void add_(Tensor& a, const Tensor& b, double alpha = 1.0);
void scale_(Tensor& a, double s);
Tensor sum_rows(const Tensor& x);

}  // namespace moe::ops
