// Internal: the CUDA half of gemm (gemm_cuda.cu), called by gemm_cpu.cpp and by the grouped
// GEMM. Plain C++ (no CUDA headers), so CPU translation units can include it.
#pragma once

#include <cstdint>

#include "moe/core/stream.h"
#include "moe/core/tensor.h"

namespace moe::ops {

// Checked arguments (gemm() in gemm_cpu.cpp validates them).
void gemm_cuda(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
               float beta);

// One row-major product on raw, contiguous device memory, through cuBLASLt:
//   C[m, n] = alpha * op(A) @ op(B) + beta * C,  op(A) [m, k], op(B) [k, n]
// A is stored [m, k] (or [k, m] when trans_a), B [k, n] (or [n, k] when trans_b); the leading
// dimension of each is its stored row length. a_dtype is A's and B's dtype; c_dtype is C's
// (equal, or f32 for bf16/f16 inputs). Requires m, n, k >= 1. Pointers may have any alignment
// their dtype allows (the alignment is part of the algorithm cache key).
struct LtMatmul {
  DType a_dtype = DType::f32;
  DType c_dtype = DType::f32;
  bool trans_a = false;
  bool trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  double alpha = 1.0;
  double beta = 0.0;
  // Batched form: `batch` products of this shape whose matrices are found through device
  // arrays of `batch` pointers each (a, b, c then point at those arrays, in device memory),
  // every matrix aligned to `pointer_alignment` bytes.
  int64_t batch = 1;
  bool pointer_array = false;
  uint32_t pointer_alignment = 0;
};
void lt_matmul(const LtMatmul& args, int device, StreamHandle stream);

// Whether cuBLASLt runs this dtype pair: (a_dtype, c_dtype) in {(f64, f64), (f32, f32),
// (bf16, bf16), (f16, f16), (bf16, f32), (f16, f32)}.
bool lt_supports(DType a_dtype, DType c_dtype);

}  // namespace moe::ops
