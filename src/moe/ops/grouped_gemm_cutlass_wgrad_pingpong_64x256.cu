// The cutlass backend's weight gradient (dw_e (+)= dy_e^T x_e) in the tile configuration
// pingpong_64x256 (grouped_gemm_cutlass_gemm.cuh has the mapping). One family and configuration per
// file, so the CUTLASS instantiations compile in parallel.
#include "moe/ops/grouped_gemm_cutlass_gemm.cuh"

namespace moe::ops::cutlass_grouped {

template void run_wgrad<CutlassTiles::pingpong_64x256>(DType in, DType out_dtype, const Call& call);

}  // namespace moe::ops::cutlass_grouped
