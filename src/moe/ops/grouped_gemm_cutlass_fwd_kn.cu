// The cutlass backend's forward with w [E, K, N] (y_e = x_e w_e: the dgrad), bf16 and f16
// (grouped_gemm_cutlass_gemm.cuh has the mapping and the tile choice). One family per file, so
// the CUTLASS instantiations compile in parallel.
#include "moe/ops/grouped_gemm_cutlass_gemm.cuh"

namespace moe::ops::cutlass_grouped {

void run_fwd_kn(DType dtype, const Call& call) {
  run_forward<cutlass::layout::RowMajor>(dtype, call);  // w_e [K, N]: B N-major
}

}  // namespace moe::ops::cutlass_grouped
