// CUDA optimizer math: AdamW as one grid-stride elementwise kernel (fp32 arithmetic, states and
// model copy rounded on store), and a deterministic squared norm (a grid fixed by the size,
// per-block tree sums in fp64, then one block adding the partials in order).
#include <algorithm>
#include <type_traits>

#include "moe/core/cuda_utils.h"
#include "moe/ops/adamw_cuda.h"

namespace moe::ops::detail {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxNormBlocks = 1024;

template <class T>
__device__ __forceinline__ float load(const T* p) {
  return cuda::load_float(p);
}

template <class P, class S, class M, bool kWriteModel>
__global__ void adamw_kernel(P* __restrict__ param, const P* __restrict__ grad,
                             S* __restrict__ exp_avg, S* __restrict__ exp_avg_sq,
                             M* __restrict__ model, int64_t n, AdamWCoefficients c) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const float g = c.grad_scale * load(grad + i);
    const float m = c.beta1 * load(exp_avg + i) + (1.0f - c.beta1) * g;
    const float v = c.beta2 * load(exp_avg_sq + i) + (1.0f - c.beta2) * g * g;
    cuda::store_float(exp_avg + i, m);
    cuda::store_float(exp_avg_sq + i, v);
    const float p = load(param + i);
    const float update =
        (m / c.bias_correction1) / (sqrtf(v / c.bias_correction2) + c.eps) + c.weight_decay * p;
    const float next = p - c.lr * update;
    cuda::store_float(param + i, next);
    if constexpr (kWriteModel) cuda::store_float(model + i, next);
  }
}

// Block-wide sum of one double per thread (kThreads a power of two): a fixed tree.
__device__ double block_sum(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  return shared[0];
}

template <class T>
__global__ void squared_norm_partials(const T* __restrict__ x, int64_t n, double* partial) {
  __shared__ double shared[kThreads];
  double acc = 0;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    double v;
    if constexpr (std::is_same_v<T, double>)
      v = x[i];
    else
      v = cuda::load_float(x + i);
    acc += v * v;
  }
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

template <class O>
__global__ void squared_norm_finish(const double* __restrict__ partial, int64_t count, O* out) {
  __shared__ double shared[kThreads];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc += partial[i];
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) *out = static_cast<O>(total);
}

}  // namespace

void adamw_step_cuda(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                     const AdamWCoefficients& c, Tensor& model_param) {
  const int64_t n = param.numel();
  if (n == 0) return;
  cudaStream_t stream = cuda::stream_of(param);
  const unsigned blocks = cuda::blocks_for(n, kThreads, 65535LL * 4);
  const char* op = "adamw_step";
  MOE_CHECK(exp_avg_sq.dtype() == exp_avg.dtype(), op,
            ": exp_avg and exp_avg_sq must share a dtype, got ", exp_avg.dtype(), " and ",
            exp_avg_sq.dtype());
  dispatch<DType::f32>(param.dtype(), op, [&]<class P>() {
    dispatch<DType::f32, DType::bf16>(exp_avg.dtype(), op, [&]<class S>() {
      if (!model_param.defined()) {
        adamw_kernel<P, S, P, false><<<blocks, kThreads, 0, stream>>>(
            param.data<P>(), grad.data<P>(), exp_avg.data<S>(), exp_avg_sq.data<S>(), nullptr, n,
            c);
        MOE_CUDA_CHECK_LAUNCH();
        return;
      }
      dispatch<DType::f32, DType::bf16, DType::f16>(model_param.dtype(), op, [&]<class M>() {
        adamw_kernel<P, S, M, true><<<blocks, kThreads, 0, stream>>>(
            param.data<P>(), grad.data<P>(), exp_avg.data<S>(), exp_avg_sq.data<S>(),
            model_param.data<M>(), n, c);
        MOE_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void squared_norm_cuda(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  cudaStream_t stream = cuda::stream_of(x);
  // The grid depends on n alone, so the summation order (and the result) is reproducible.
  const int64_t blocks = std::clamp<int64_t>((n + kThreads * 8 - 1) / (kThreads * 8), 1,
                                             kMaxNormBlocks);
  Tensor partial = Tensor::empty({blocks}, DType::f64, x.device());
  dispatch<DType::f64, DType::f32, DType::bf16, DType::f16>(x.dtype(), "squared_norm",
                                                            [&]<class T>() {
    squared_norm_partials<T><<<unsigned(blocks), kThreads, 0, stream>>>(x.data<T>(), n,
                                                                        partial.data<double>());
    MOE_CUDA_CHECK_LAUNCH();
  });
  dispatch<DType::f64, DType::f32>(out.dtype(), "squared_norm", [&]<class O>() {
    squared_norm_finish<O><<<1, kThreads, 0, stream>>>(partial.data<double>(), blocks,
                                                       out.data<O>());
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::ops::detail
