#include "moe/core/cuda_utils.h"
#include "moe/ops/local_experts_cuda.h"

namespace moe::ops::detail {
namespace {
__global__ void localize_kernel(const int32_t* ids, int32_t* out, int64_t n, int64_t first,
                                int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t local = ids[i] - first;
    out[i] = (ids[i] >= 0 && local >= 0 && local < count) ? static_cast<int32_t>(local) : -1;
  }
}
}  // namespace

void localize_expert_ids_cuda(const Tensor& ids, int64_t first, int64_t count, Tensor& out) {
  const int64_t n = ids.numel();
  if (n == 0) return;
  localize_kernel<<<cuda::blocks_for(n, 256), 256, 0, cuda::stream_of(ids)>>>(
      ids.data<int32_t>(), out.data<int32_t>(), n, first, count);
  MOE_CUDA_CHECK_LAUNCH();
}

}  // namespace moe::ops::detail
