// CUDA elementwise helpers: grid-stride loops over 16-byte packs (the scalar tail handled by the
// first threads), and a two-pass column sum (row blocks write partial sums, a second pass adds
// them in order: deterministic, no atomics).
#include <algorithm>

#include "moe/core/cuda_utils.h"
#include "moe/ops/elementwise_cuda.h"
#include "moe/ops/row_kernels_cuda.cuh"

namespace moe::ops::detail {
namespace {

constexpr int kThreads = 256;

template <class TA, class TB>
using MixedAcc =
    std::conditional_t<std::is_same_v<TA, double> || std::is_same_v<TB, double>, double, float>;

template <class T, class A>
__device__ __forceinline__ A load_as(const T& v) {
  if constexpr (std::is_same_v<T, double>)
    return static_cast<A>(v);
  else
    return static_cast<A>(cuda::load_float(&v));
}

template <class T, class A>
__device__ __forceinline__ void store_as(T& dst, A v) {
  if constexpr (std::is_same_v<T, double>)
    dst = v;
  else
    cuda::store_float(&dst, static_cast<float>(v));
}

// a += alpha * b over N-element packs; elements from packs * N on are the tail.
template <class TA, class TB, int N>
__global__ void add_kernel(TA* __restrict__ a, const TB* __restrict__ b, int64_t n,
                           MixedAcc<TA, TB> alpha) {
  using A = MixedAcc<TA, TB>;
  const int64_t packs = n / N;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i = first; i < packs; i += stride) {
    Pack<TA, N> va = load_pack<N>(a + i * N);
    const Pack<TB, N> vb = load_pack<N>(b + i * N);
#pragma unroll
    for (int k = 0; k < N; ++k)
      store_as(va.v[k], load_as<TA, A>(va.v[k]) + alpha * load_as<TB, A>(vb.v[k]));
    store_pack<N>(a + i * N, va);
  }
  for (int64_t i = packs * N + first; i < n; i += stride)
    store_as(a[i], load_as<TA, A>(a[i]) + alpha * load_as<TB, A>(b[i]));
}

template <class T, int N>
__global__ void scale_kernel(T* __restrict__ a, int64_t n, Acc<T> s) {
  const int64_t packs = n / N;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i = first; i < packs; i += stride) {
    Pack<T, N> v = load_pack<N>(a + i * N);
#pragma unroll
    for (int k = 0; k < N; ++k) from_acc(v.v[k], to_acc(v.v[k]) * s);
    store_pack<N>(a + i * N, v);
  }
  for (int64_t i = packs * N + first; i < n; i += stride) from_acc(a[i], to_acc(a[i]) * s);
}

// partial[split][c] = sum of x[r][c] over the split's rows, in row order (coalesced: a block
// covers kThreads consecutive columns).
template <class T, class O>
__global__ void column_sum_kernel(const T* __restrict__ x, O* __restrict__ partial, int64_t rows,
                                  int64_t cols, int64_t rows_per_split) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t begin = blockIdx.y * rows_per_split;
  const int64_t end = min(rows, begin + rows_per_split);
  O acc = 0;
  for (int64_t r = begin; r < end; ++r) acc += load_as<T, O>(x[r * cols + c]);
  partial[blockIdx.y * cols + c] = acc;
}

template <class O>
__global__ void add_partials_kernel(const O* __restrict__ partial, O* __restrict__ out,
                                    int64_t splits, int64_t cols) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  O acc = 0;
  for (int64_t s = 0; s < splits; ++s) acc += partial[s * cols + c];
  out[c] = acc;
}

}  // namespace

void add_cuda(Tensor& a, const Tensor& b, double alpha) {
  const int64_t n = a.numel();
  if (n == 0) return;
  cudaStream_t stream = cuda::stream_of(a);
  dispatch_float(a.dtype(), "add_", [&]<class TA>() {
    dispatch_float(b.dtype(), "add_", [&]<class TB>() {
      using A = MixedAcc<TA, TB>;
      // 16 bytes of the narrower dtype per pack (the wider one moves 32 or 64 bytes).
      constexpr int kN = kPack16 < TA >> kPack16<TB> ? kPack16<TA> : kPack16<TB>;
      const bool vector = aligned_to(a.raw(), 16) && aligned_to(b.raw(), 16);
      const unsigned blocks = cuda::blocks_for(vector ? (n + kN - 1) / kN : n, kThreads);
      if (vector)
        add_kernel<TA, TB, kN>
            <<<blocks, kThreads, 0, stream>>>(a.data<TA>(), b.data<TB>(), n, static_cast<A>(alpha));
      else
        add_kernel<TA, TB, 1>
            <<<blocks, kThreads, 0, stream>>>(a.data<TA>(), b.data<TB>(), n, static_cast<A>(alpha));
      MOE_CUDA_CHECK_LAUNCH();
    });
  });
}

void scale_cuda(Tensor& a, double s) {
  const int64_t n = a.numel();
  if (n == 0) return;
  cudaStream_t stream = cuda::stream_of(a);
  dispatch_float(a.dtype(), "scale_", [&]<class T>() {
    constexpr int kN = kPack16<T>;
    const bool vector = aligned_to(a.raw(), 16);
    const unsigned blocks = cuda::blocks_for(vector ? (n + kN - 1) / kN : n, kThreads);
    if (vector)
      scale_kernel<T, kN><<<blocks, kThreads, 0, stream>>>(a.data<T>(), n, static_cast<Acc<T>>(s));
    else
      scale_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(a.data<T>(), n, static_cast<Acc<T>>(s));
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void sum_rows_cuda(const Tensor& x, Tensor& out) {
  const int64_t rows = x.size(0), cols = x.size(1);
  if (cols == 0) return;
  cudaStream_t stream = cuda::stream_of(x);
  // Enough row splits to fill the GPU when there are few columns, each of >= 64 rows.
  constexpr int64_t kMinRowsPerSplit = 64, kMaxSplits = 512;
  const int64_t splits =
      std::clamp<int64_t>((rows + kMinRowsPerSplit - 1) / kMinRowsPerSplit, 1, kMaxSplits);
  const int64_t rows_per_split = std::max<int64_t>((rows + splits - 1) / splits, 1);
  const unsigned col_blocks = static_cast<unsigned>((cols + kThreads - 1) / kThreads);
  dispatch_float(x.dtype(), "sum_rows", [&]<class T>() {
    using O = std::conditional_t<std::is_same_v<T, double>, double, float>;
    Tensor partial = splits == 1 ? out : Tensor::empty({splits, cols}, out.dtype(), out.device());
    column_sum_kernel<T, O>
        <<<dim3(col_blocks, static_cast<unsigned>(splits)), kThreads, 0, stream>>>(
            x.data<T>(), partial.data<O>(), rows, cols, rows_per_split);
    MOE_CUDA_CHECK_LAUNCH();
    if (splits > 1) {
      add_partials_kernel<O>
          <<<col_blocks, kThreads, 0, stream>>>(partial.data<O>(), out.data<O>(), splits, cols);
      MOE_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace moe::ops::detail
