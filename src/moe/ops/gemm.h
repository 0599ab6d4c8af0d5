// Dense matrix products: the building block of every linear layer and of the router.
//
//   C[M,N] = alpha * op(A) @ op(B) + beta * C,   op(X) = X or X^T, all row-major.
//
// A linear layer y = x W^T (W stored [out, in], as Megatron and Hugging Face do) is
// gemm(x, false, W, true, y); its backward is dx = dy W  -> gemm(dy, false, W, false, dx)
// and dW += dy^T x -> gemm(dy, true, x, false, dW, 1, 1).
//
// dtypes: A and B share one dtype; C has the same dtype, or f32 when A/B are bf16/f16 (fp32
// output for gradient accumulation and the fp32 router). Accumulation is always at least fp32.
//   CPU: f64, f32 through OpenBLAS (cblas_dgemm / cblas_sgemm); bf16/f16 upcast to f32.
//   CUDA: cuBLASLt; bf16/f16 with fp32 compute; f32 (no TF32) and f64. The matmul descriptors
//   and the heuristic's algorithm are cached per (shape, dtypes, pointer alignment) and per
//   thread, with a 32 MiB workspace per stream: a repeated shape costs one cublasLtMatmul. No
//   host synchronisation. Any pointer alignment the dtype allows works (row views included).
// M, N or K may be 0: with M or N zero nothing happens; with K zero C = beta * C (beta = 0
// writes zeros). As in BLAS, beta = 0 never reads C (NaNs in C do not propagate).
// Tensors must be contiguous (every moe Tensor is); c must not alias a or b.
#pragma once

#include "moe/core/tensor.h"

namespace moe::ops {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
          float alpha = 1.0f, float beta = 0.0f);

// Allocating form: returns op(A) @ op(B) with dtype `out_dtype` (default: A's dtype).
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, DType out_dtype);

}  // namespace moe::ops
