// CUDA optimizer math: AdamW as one grid-stride elementwise kernel (fp32 arithmetic, states and
// model copy rounded on store, 4 elements per thread with wide loads when aligned), and a
// deterministic squared norm (a grid fixed by the size, per-block tree sums in fp64, then one block
// adding the partials in order).
#include <algorithm>
#include <cstdint>
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

// The update of one element in fp32. Every rounding is spelled out (intrinsics, no implicit
// multiply-add contraction), so the result is the same bits whichever kernel variant below
// runs it: the compiler contracts the two differently otherwise.
__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v, float& model,
                                              const AdamWCoefficients& c) {
  g = __fmul_rn(c.grad_scale, g);
  m = __fmaf_rn(c.beta1, m, __fmul_rn(1.0f - c.beta1, g));
  v = __fmaf_rn(c.beta2, v, __fmul_rn(__fmul_rn(1.0f - c.beta2, g), g));
  const float denominator = __fadd_rn(__fsqrt_rn(__fdiv_rn(v, c.bias_correction2)), c.eps);
  const float update =
      __fmaf_rn(c.weight_decay, p, __fdiv_rn(__fdiv_rn(m, c.bias_correction1), denominator));
  p = __fmaf_rn(-c.lr, update, p);
  model = p;
}

// kVec consecutive elements of one array as a single aligned load / store: 16 bytes for f32,
// 8 for bf16 (the optimizer is bound by memory traffic; wide accesses reach the copy rate).
template <class T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <class T, int kVec>
__device__ __forceinline__ void load_pack(const T* p, float (&out)[kVec]) {
  const Pack<T, kVec> pack = *reinterpret_cast<const Pack<T, kVec>*>(p);
#pragma unroll
  for (int j = 0; j < kVec; ++j) out[j] = cuda::load_float(&pack.v[j]);
}

template <class T, int kVec>
__device__ __forceinline__ void store_pack(T* p, const float (&in)[kVec]) {
  Pack<T, kVec> pack;
#pragma unroll
  for (int j = 0; j < kVec; ++j) cuda::store_float(&pack.v[j], in[j]);
  *reinterpret_cast<Pack<T, kVec>*>(p) = pack;
}

// Each thread updates kVec consecutive elements per iteration (kVec = 1: any alignment; the
// launcher picks 4 when every pointer is aligned to its pack). Element i's arithmetic is the
// same for every kVec, so the result does not depend on the choice.
template <class P, class S, class M, bool kWriteModel, int kVec>
__global__ void adamw_kernel(P* __restrict__ param, const P* __restrict__ grad,
                             S* __restrict__ exp_avg, S* __restrict__ exp_avg_sq,
                             M* __restrict__ model, int64_t n, AdamWCoefficients c) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x * kVec;
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * kVec; i < n; i += stride) {
    if (kVec > 1 && i + kVec > n) {  // the tail of a vectorised launch, one element at a time
      for (int64_t e = i; e < n; ++e) {
        float p = load(param + e), m = load(exp_avg + e), v = load(exp_avg_sq + e), out;
        adamw_element(p, load(grad + e), m, v, out, c);
        cuda::store_float(exp_avg + e, m);
        cuda::store_float(exp_avg_sq + e, v);
        cuda::store_float(param + e, p);
        if constexpr (kWriteModel) cuda::store_float(model + e, out);
      }
      return;
    }
    float p[kVec], g[kVec], m[kVec], v[kVec], out[kVec];
    load_pack<P, kVec>(param + i, p);
    load_pack<P, kVec>(grad + i, g);
    load_pack<S, kVec>(exp_avg + i, m);
    load_pack<S, kVec>(exp_avg_sq + i, v);
#pragma unroll
    for (int j = 0; j < kVec; ++j) adamw_element(p[j], g[j], m[j], v[j], out[j], c);
    store_pack<S, kVec>(exp_avg + i, m);
    store_pack<S, kVec>(exp_avg_sq + i, v);
    store_pack<P, kVec>(param + i, p);
    if constexpr (kWriteModel) store_pack<M, kVec>(model + i, out);
  }
}

template <class P, class S, class M, bool kWriteModel>
void launch_adamw(P* param, const P* grad, S* exp_avg, S* exp_avg_sq, M* model, int64_t n,
                  const AdamWCoefficients& c, cudaStream_t stream) {
  constexpr int kVec = 4;
  const auto aligned = [](const void* p, size_t bytes) {
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
  };
  const bool vectorised = aligned(param, sizeof(P) * kVec) && aligned(grad, sizeof(P) * kVec) &&
                          aligned(exp_avg, sizeof(S) * kVec) &&
                          aligned(exp_avg_sq, sizeof(S) * kVec) &&
                          (!kWriteModel || aligned(model, sizeof(M) * kVec));
  if (vectorised) {
    const unsigned blocks = cuda::blocks_for((n + kVec - 1) / kVec, kThreads, 65535LL * 4);
    adamw_kernel<P, S, M, kWriteModel, kVec>
        <<<blocks, kThreads, 0, stream>>>(param, grad, exp_avg, exp_avg_sq, model, n, c);
  } else {
    const unsigned blocks = cuda::blocks_for(n, kThreads, 65535LL * 4);
    adamw_kernel<P, S, M, kWriteModel, 1>
        <<<blocks, kThreads, 0, stream>>>(param, grad, exp_avg, exp_avg_sq, model, n, c);
  }
  MOE_CUDA_CHECK_LAUNCH();
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
  const char* op = "adamw_step";
  MOE_CHECK(exp_avg_sq.dtype() == exp_avg.dtype(), op,
            ": exp_avg and exp_avg_sq must share a dtype, got ", exp_avg.dtype(), " and ",
            exp_avg_sq.dtype());
  dispatch<DType::f32>(param.dtype(), op, [&]<class P>() {
    dispatch<DType::f32, DType::bf16>(exp_avg.dtype(), op, [&]<class S>() {
      if (!model_param.defined()) {
        launch_adamw<P, S, P, false>(param.data<P>(), grad.data<P>(), exp_avg.data<S>(),
                                     exp_avg_sq.data<S>(), nullptr, n, c, stream);
        return;
      }
      dispatch<DType::f32, DType::bf16, DType::f16>(model_param.dtype(), op, [&]<class M>() {
        launch_adamw<P, S, M, true>(param.data<P>(), grad.data<P>(), exp_avg.data<S>(),
                                    exp_avg_sq.data<S>(), model_param.data<M>(), n, c, stream);
      });
    });
  });
}

void squared_norm_cuda(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  cudaStream_t stream = cuda::stream_of(x);
  // The grid depends on n alone, so the summation order (and the result) is reproducible.
  const int64_t blocks =
      std::clamp<int64_t>((n + kThreads * 8 - 1) / (kThreads * 8), 1, kMaxNormBlocks);
  Tensor partial = Tensor::empty({blocks}, DType::f64, x.device());
  dispatch_float(x.dtype(), "squared_norm", [&]<class T>() {
    squared_norm_partials<T>
        <<<unsigned(blocks), kThreads, 0, stream>>>(x.data<T>(), n, partial.data<double>());
    MOE_CUDA_CHECK_LAUNCH();
  });
  dispatch<DType::f64, DType::f32>(out.dtype(), "squared_norm", [&]<class O>() {
    squared_norm_finish<O>
        <<<1, kThreads, 0, stream>>>(partial.data<double>(), blocks, out.data<O>());
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::ops::detail
