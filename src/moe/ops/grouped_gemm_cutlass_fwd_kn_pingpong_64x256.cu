// The cutlass backend's forward with w [E, K, N] (y_e = x_e w_e: the dgrad) in the tile
// configuration pingpong_64x256 (grouped_gemm_cutlass_gemm.cuh has the mapping). One family and
// configuration per file, so the CUTLASS instantiations compile in parallel.
#include "moe/ops/grouped_gemm_cutlass_gemm.cuh"

namespace moe::ops::cutlass_grouped {

template void run_fwd_kn<CutlassTiles::pingpong_64x256>(DType dtype, const Call& call);

}  // namespace moe::ops::cutlass_grouped
