// Internal to the router's CUDA files: warp-level reductions in fp64 (butterfly shuffles, so
// every lane ends with the result and the order of additions is fixed: deterministic), and
// the fixed-order block reduction that turns per-row partials into a 0-d loss.
#pragma once

#include <cstdint>

#include "moe/core/cuda_utils.h"
#include "moe/ops/router_rules.h"

namespace moe::ops::detail {

inline constexpr unsigned kFullWarp = 0xffffffffu;
inline constexpr int kWarp = 32;

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullWarp, v, offset);
  return v;
}

__device__ __forceinline__ double warp_max(double v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    v = fmax(v, __shfl_xor_sync(kFullWarp, v, offset));
  return v;
}

// The best (value, index) of the warp under ranks_before; a strict total order, so every lane
// ends with the same winner whatever the shuffle pattern.
__device__ __forceinline__ void warp_best(double& value, int64_t& index) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    const double other_value = __shfl_xor_sync(kFullWarp, value, offset);
    const int64_t other_index =
        static_cast<int64_t>(__shfl_xor_sync(kFullWarp, static_cast<long long>(index), offset));
    if (ranks_before(other_value, other_index, value, index)) {
      value = other_value;
      index = other_index;
    }
  }
}

// out[0] = scale * sum_i partial[i], one block of kReduceThreads threads: each thread adds a
// strided slice in index order, then a shared-memory tree. Deterministic.
inline constexpr int kReduceThreads = 512;

template <class T>
__global__ void __launch_bounds__(kReduceThreads)
    scaled_sum_kernel(const double* partial, int64_t n, double scale, T* out) {
  __shared__ double buffer[kReduceThreads];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += kReduceThreads) acc += partial[i];
  buffer[threadIdx.x] = acc;
  __syncthreads();
  for (int width = kReduceThreads / 2; width > 0; width >>= 1) {
    if (threadIdx.x < width) buffer[threadIdx.x] += buffer[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = static_cast<T>(scale * buffer[0]);
}

// Launch shape of the warp-per-row kernels.
inline constexpr int kRowWarpsPerBlock = 8;
inline unsigned row_blocks(int64_t rows, int warps_per_block = kRowWarpsPerBlock) {
  return cuda::blocks_for(rows, warps_per_block);
}

}  // namespace moe::ops::detail
