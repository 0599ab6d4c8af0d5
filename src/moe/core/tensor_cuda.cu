// CUDA halves of Tensor's element-wise methods: cast, fill and the counter-based RNG fills.
#include "moe/core/cuda_utils.h"
#include "moe/core/rng.h"
#include "moe/core/tensor_kernels.h"

namespace moe::detail {
namespace {

template <class T>
__device__ __forceinline__ T from_double(double v) {
  if constexpr (std::is_integral_v<T> || std::is_same_v<T, double>) return static_cast<T>(v);
  else if constexpr (std::is_same_v<T, float>) return static_cast<float>(v);
  else { T out; cuda::store_float(&out, static_cast<float>(v)); return out; }
}

template <class T>
__device__ __forceinline__ double to_double(T v) {
  if constexpr (std::is_integral_v<T> || std::is_same_v<T, double> || std::is_same_v<T, float>)
    return static_cast<double>(v);
  else return static_cast<double>(cuda::load_float(&v));
}

template <class S, class D>
__global__ void cast_kernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<D, double> || std::is_integral_v<D> || std::is_integral_v<S>)
      dst[i] = from_double<D>(to_double(src[i]));
    else if constexpr (std::is_same_v<S, double>)
      dst[i] = from_double<D>(src[i]);
    else
      cuda::store_float(&dst[i], cuda::load_float(&src[i]));
  }
}

template <class T>
__global__ void fill_kernel(T* dst, T value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

template <class T>
__global__ void uniform_kernel(T* dst, int64_t n, uint64_t seed, float lo, float hi,
                               uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = philox_uniform(seed, offset + static_cast<uint64_t>(i), lo, hi);
    if constexpr (std::is_same_v<T, double>) dst[i] = v;
    else dst[i] = T(v);  // host-identical rounding (bit-level conversion)
  }
}

template <class T>
__global__ void normal_kernel(T* dst, int64_t n, uint64_t seed, double mean, double stddev,
                              uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double v = mean + stddev * philox_normal(seed, offset + static_cast<uint64_t>(i));
    if constexpr (std::is_same_v<T, double>) dst[i] = v;
    else dst[i] = T(static_cast<float>(v));
  }
}

constexpr int kThreads = 256;

#define MOE_ALL_DTYPES                                                                  \
  DType::f64, DType::f32, DType::bf16, DType::f16, DType::fp8_e4m3, DType::fp8_e5m2, \
      DType::i64, DType::i32, DType::u8
#define MOE_FLOAT_DTYPES \
  DType::f64, DType::f32, DType::bf16, DType::f16, DType::fp8_e4m3, DType::fp8_e5m2

}  // namespace

void cast_cuda(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  if (n == 0) return;
  cudaStream_t stream = cuda::stream_of(src);
  dispatch<MOE_ALL_DTYPES>(src.dtype(), "cast (source)", [&]<class S>() {
    dispatch<MOE_ALL_DTYPES>(dst.dtype(), "cast (destination)", [&]<class D>() {
      cast_kernel<S, D><<<cuda::blocks_for(n, kThreads), kThreads, 0, stream>>>(
          src.data<S>(), dst.data<D>(), n);
      MOE_CUDA_CHECK_LAUNCH();
    });
  });
}

void fill_cuda(Tensor& t, double value) {
  const int64_t n = t.numel();
  if (n == 0) return;
  dispatch<MOE_ALL_DTYPES>(t.dtype(), "fill_", [&]<class T>() {
    T v;
    if constexpr (std::is_integral_v<T> || std::is_same_v<T, double>) v = static_cast<T>(value);
    else v = T(static_cast<float>(value));
    fill_kernel<T><<<cuda::blocks_for(n, kThreads), kThreads, 0, cuda::stream_of(t)>>>(
        t.data<T>(), v, n);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void fill_uniform_cuda(Tensor& t, uint64_t seed, float lo, float hi, uint64_t offset) {
  const int64_t n = t.numel();
  if (n == 0) return;
  dispatch<MOE_FLOAT_DTYPES>(t.dtype(), "fill_uniform", [&]<class T>() {
    uniform_kernel<T><<<cuda::blocks_for(n, kThreads), kThreads, 0, cuda::stream_of(t)>>>(
        t.data<T>(), n, seed, lo, hi, offset);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void fill_normal_cuda(Tensor& t, uint64_t seed, double mean, double stddev, uint64_t offset) {
  const int64_t n = t.numel();
  if (n == 0) return;
  dispatch<MOE_FLOAT_DTYPES>(t.dtype(), "fill_normal", [&]<class T>() {
    normal_kernel<T><<<cuda::blocks_for(n, kThreads), kThreads, 0, cuda::stream_of(t)>>>(
        t.data<T>(), n, seed, mean, stddev, offset);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::detail
