// The cutlass backend's forward with w [E, N, K] (trans_w: y_e = x_e w_e^T), bf16 and f16
// (grouped_gemm_cutlass_gemm.cuh has the mapping and the tile choice). One family per file, so
// the CUTLASS instantiations compile in parallel.
#include "moe/ops/grouped_gemm_cutlass_gemm.cuh"

namespace moe::ops::cutlass_grouped {

void run_fwd_nk(DType dtype, const Call& call) {
  using A = cutlass::layout::RowMajor;
  using B = cutlass::layout::ColumnMajor;  // w_e [N, K]: B K-major
  if (dtype == DType::bf16) {
    run<cutlass::bfloat16_t, A, cutlass::bfloat16_t, B, void, cutlass::bfloat16_t, Cooperative>(
        call);
  } else {
    MOE_CHECK(dtype == DType::f16, "grouped_gemm: the cutlass backend has no ", dtype, " kernel");
    run<cutlass::half_t, A, cutlass::half_t, B, void, cutlass::half_t, Cooperative>(call);
  }
}

}  // namespace moe::ops::cutlass_grouped
