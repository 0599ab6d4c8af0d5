// The cutlass backend's weight gradient for bf16 inputs, into f32 or bf16 dw
// (grouped_gemm_cutlass_gemm.cuh has the mapping and the tile choice). One family per file, so
// the CUTLASS instantiations compile in parallel.
#include "moe/ops/grouped_gemm_cutlass_gemm.cuh"

namespace moe::ops::cutlass_grouped {

void run_wgrad_bf16(DType out_dtype, const Call& call) {
  using T = cutlass::bfloat16_t;
  using A = cutlass::layout::ColumnMajor;  // dy_e^T
  using B = cutlass::layout::RowMajor;     // x_e
  if (out_dtype == DType::f32) {
    run<T, A, T, B, float, float, Pingpong>(call);
  } else {
    MOE_CHECK(out_dtype == DType::bf16, "grouped_gemm_wgrad: the cutlass backend has no bf16 -> ",
              out_dtype, " kernel");
    run<T, A, T, B, T, T, Pingpong>(call);
  }
}

}  // namespace moe::ops::cutlass_grouped
