// The cutlass backend's forward with w [E, N, K] (trans_w: y_e = x_e w_e^T), bf16 and f16
// (grouped_gemm_cutlass_gemm.cuh has the mapping and the tile choice). One family per file, so
// the CUTLASS instantiations compile in parallel.
#include "moe/ops/grouped_gemm_cutlass_gemm.cuh"

namespace moe::ops::cutlass_grouped {

void run_fwd_nk(DType dtype, const Call& call) {
  run_forward<cutlass::layout::ColumnMajor>(dtype, call);  // w_e [N, K]: B K-major
}

}  // namespace moe::ops::cutlass_grouped
