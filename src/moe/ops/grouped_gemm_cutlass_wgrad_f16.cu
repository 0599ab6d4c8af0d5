// The cutlass backend's weight gradient for f16 inputs, into f32 or f16 dw
// (grouped_gemm_cutlass_gemm.cuh has the mapping and the tile choice). One family per file, so
// the CUTLASS instantiations compile in parallel.
#include "moe/ops/grouped_gemm_cutlass_gemm.cuh"

namespace moe::ops::cutlass_grouped {

void run_wgrad_f16(DType out_dtype, const Call& call) {
  run_wgrad<cutlass::half_t>(DType::f16, out_dtype, call);
}

}  // namespace moe::ops::cutlass_grouped
