// Internal to the cutlass grouped GEMM backend (grouped_gemm_cutlass.h): one grouped GEMM call
// as the dispatcher (grouped_gemm_cutlass_dispatch.cu) hands it to the files that instantiate
// CUTLASS's kernels, one family per file so they compile in parallel. Plain C++.
#pragma once

#include <cstdint>

#include "moe/core/dtype.h"
#include "moe/core/stream.h"

namespace moe::ops::cutlass_grouped {

// Row-major operands, rows grouped by expert (grouped_gemm.h):
//   forward  a = x [rows, k], b = w [E, n, k] (fwd_nk) or [E, k, n] (fwd_kn), out = y [rows, n]
//   wgrad    a = dy [rows, n], b = x [rows, k], out = dw [E, n, k] (out = beta * out + dy^T x)
struct Call {
  bool wgrad = false;            // names the op in the device's error messages
  const void* counts = nullptr;  // tokens_per_expert on the device, [experts]
  bool counts_i64 = true;        // i64, else i32
  int experts = 0;
  int64_t rows = 0;
  int64_t n = 0, k = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* out = nullptr;
  float beta = 0.0f;         // wgrad: 1 accumulates into dw
  int64_t* total = nullptr;  // device, or null: receives sum(counts), for the forward's zeroing
  int device = 0;
  int sm_count = 0;
  StreamHandle stream = nullptr;
};

// Each runs `call` on its stream: the argument-table kernel (which validates the counts and
// writes *call.total when given), then the grouped GEMM. `dtype` is a's and b's (bf16 or f16); the
// forward writes that dtype, the wgrad `out_dtype` (the inputs' dtype or f32).
void run_fwd_nk(DType dtype, const Call& call);  // y_e = x_e w_e^T, w [E, N, K]
void run_fwd_kn(DType dtype, const Call& call);  // y_e = x_e w_e,   w [E, K, N]
void run_wgrad_bf16(DType out_dtype, const Call& call);
void run_wgrad_f16(DType out_dtype, const Call& call);

}  // namespace moe::ops::cutlass_grouped
