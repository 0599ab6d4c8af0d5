// The cutlass backend's weight gradient for bf16 inputs, into f32 or bf16 dw
// (grouped_gemm_cutlass_gemm.cuh has the mapping and the tile choice). One family per file, so
// the CUTLASS instantiations compile in parallel.
#include "moe/ops/grouped_gemm_cutlass_gemm.cuh"

namespace moe::ops::cutlass_grouped {

void run_wgrad_bf16(DType out_dtype, const Call& call) {
  run_wgrad<cutlass::bfloat16_t>(DType::bf16, out_dtype, call);
}

}  // namespace moe::ops::cutlass_grouped
