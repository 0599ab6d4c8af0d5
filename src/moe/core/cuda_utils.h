// Helpers for CUDA translation units only (never included by CPU-only code): status checks
// that name the failing call, launch-shape helpers and float conversions of storage types
// through the hardware intrinsics.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "moe/core/dtype.h"
#include "moe/core/error.h"
#include "moe/core/stream.h"
#include "moe/core/tensor.h"

#define MOE_CUDA_CHECK(expr)                                                          \
  do {                                                                                \
    cudaError_t moe_status_ = (expr);                                                 \
    MOE_CHECK(moe_status_ == cudaSuccess, "CUDA error in ", #expr, ": ",              \
              cudaGetErrorName(moe_status_), " (", cudaGetErrorString(moe_status_), ")"); \
  } while (0)

// After a kernel launch: reports launch-configuration errors at the launch site.
#define MOE_CUDA_CHECK_LAUNCH() MOE_CUDA_CHECK(cudaGetLastError())

namespace moe::cuda {

inline cudaStream_t stream_of(const Tensor& t) {
  return reinterpret_cast<cudaStream_t>(current_stream(t.device().index));
}

inline unsigned blocks_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

// Storage type <-> float through intrinsics (faster than the bit-level host versions).
template <class T>
__device__ __forceinline__ float load_float(const T* p) {
  if constexpr (std::is_same_v<T, bf16>) return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
  else if constexpr (std::is_same_v<T, f16>) return __half2float(*reinterpret_cast<const __half*>(p));
  else return static_cast<float>(*p);
}

template <class T>
__device__ __forceinline__ void store_float(T* p, float v) {
  if constexpr (std::is_same_v<T, bf16>) *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v);
  else if constexpr (std::is_same_v<T, f16>) *reinterpret_cast<__half*>(p) = __float2half_rn(v);
  else *p = T(v);
}

}  // namespace moe::cuda
