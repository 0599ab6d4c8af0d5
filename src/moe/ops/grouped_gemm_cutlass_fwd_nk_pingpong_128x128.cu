// The cutlass backend's forward with w [E, N, K] (trans_w: y_e = x_e w_e^T) in the tile
// configuration pingpong_128x128 (grouped_gemm_cutlass_gemm.cuh has the mapping). One family and
// configuration per file, so the CUTLASS instantiations compile in parallel.
#include "moe/ops/grouped_gemm_cutlass_gemm.cuh"

namespace moe::ops::cutlass_grouped {

template void run_fwd_nk<CutlassTiles::pingpong_128x128>(DType dtype, const Call& call);

}  // namespace moe::ops::cutlass_grouped
