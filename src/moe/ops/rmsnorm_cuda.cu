// CUDA RMSNorm. Forward and dx: a power-of-two group of threads per row (row_launch), 16-byte
// packed loads/stores when every row start is aligned, the row sum in a fixed-order tree
// (row_group_sum). dw: a column kernel writes partial sums per (row chunk, column), a second
// kernel adds the chunks in order into dw. No atomics anywhere: bitwise reproducible.
#include <algorithm>
#include <initializer_list>

#include "moe/core/cuda_utils.h"
#include "moe/ops/rmsnorm_cuda.h"
#include "moe/ops/row_kernels_cuda.cuh"

namespace moe::ops::detail {
namespace {

__device__ __forceinline__ int64_t row_of_thread(int threads_per_row) {
  return int64_t(blockIdx.x) * (blockDim.x / threads_per_row) + threadIdx.x / threads_per_row;
}

template <class A>
__device__ __forceinline__ A inv_sqrt(A v) {
  if constexpr (std::is_same_v<A, double>)
    return 1.0 / sqrt(v);
  else
    return 1.0f / sqrtf(v);  // IEEE sqrt and division: matches the CPU reference closely
}

// y = x * rstd * w; rstd[row] = 1 / sqrt(mean(x^2) + eps). No early return (row_group_sum).
template <class T, int N>
__global__ void rmsnorm_forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                       T* __restrict__ y, Acc<T>* __restrict__ rstd, int64_t rows,
                                       int64_t hidden, Acc<T> eps, int threads_per_row) {
  using A = Acc<T>;
  __shared__ A scratch[kRowBlock / 32];
  const int64_t row = row_of_thread(threads_per_row);
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  const int64_t step = int64_t(threads_per_row) * N;
  const bool active = row < rows;
  const T* xr = x + (active ? row : 0) * hidden;
  A sum_sq = 0;
  if (active) {
    for (int64_t c = int64_t(lane) * N; c < hidden; c += step) {
      const Pack<T, N> v = load_pack<N>(xr + c);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const A a = to_acc(v.v[i]);
        sum_sq += a * a;
      }
    }
  }
  const A total = row_group_sum(sum_sq, threads_per_row, scratch);
  if (!active) return;  // after the block-wide sum
  const A rs = inv_sqrt(total / static_cast<A>(hidden) + eps);
  if (lane == 0) rstd[row] = rs;
  T* yr = y + row * hidden;
  for (int64_t c = int64_t(lane) * N; c < hidden; c += step) {
    const Pack<T, N> v = load_pack<N>(xr + c);
    const Pack<T, N> g = load_pack<N>(w + c);
    Pack<T, N> o;
#pragma unroll
    for (int i = 0; i < N; ++i) from_acc(o.v[i], to_acc(v.v[i]) * rs * to_acc(g.v[i]));
    store_pack<N>(yr + c, o);
  }
}

// dx = rstd * (dy w - xhat * mean(dy w xhat)), xhat = x rstd.
template <class T, int N>
__global__ void rmsnorm_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                  const T* __restrict__ w, const Acc<T>* __restrict__ rstd,
                                  T* __restrict__ dx, int64_t rows, int64_t hidden,
                                  int threads_per_row) {
  using A = Acc<T>;
  __shared__ A scratch[kRowBlock / 32];
  const int64_t row = row_of_thread(threads_per_row);
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  const int64_t step = int64_t(threads_per_row) * N;
  const bool active = row < rows;
  const int64_t base = (active ? row : 0) * hidden;
  const A rs = active ? rstd[row] : A(0);
  A dot = 0;
  if (active) {
    for (int64_t c = int64_t(lane) * N; c < hidden; c += step) {
      const Pack<T, N> xv = load_pack<N>(x + base + c);
      const Pack<T, N> dv = load_pack<N>(dy + base + c);
      const Pack<T, N> wv = load_pack<N>(w + c);
#pragma unroll
      for (int i = 0; i < N; ++i) dot += to_acc(dv.v[i]) * to_acc(wv.v[i]) * (to_acc(xv.v[i]) * rs);
    }
  }
  const A total = row_group_sum(dot, threads_per_row, scratch);
  if (!active) return;
  const A mean_dot = total / static_cast<A>(hidden);
  for (int64_t c = int64_t(lane) * N; c < hidden; c += step) {
    const Pack<T, N> xv = load_pack<N>(x + base + c);
    const Pack<T, N> dv = load_pack<N>(dy + base + c);
    const Pack<T, N> wv = load_pack<N>(w + c);
    Pack<T, N> o;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const A xhat = to_acc(xv.v[i]) * rs;
      const A g = to_acc(dv.v[i]) * to_acc(wv.v[i]);
      from_acc(o.v[i], rs * (g - xhat * mean_dot));
    }
    store_pack<N>(dx + base + c, o);
  }
}

// ---- dw: deterministic column sums ------------------------------------------------------------
// Block (kColTile, kRowStripes): thread (tx, ty) sums rows chunk_start + ty, + kRowStripes, ...
// of column tile * kColTile + tx (a warp reads kColTile consecutive columns of one row), then
// the kRowStripes stripe sums are added in order by ty = 0.
constexpr int kColTile = 32;
constexpr int kRowStripes = 8;
constexpr int64_t kMinRowsPerChunk = 64;
constexpr int64_t kTargetBlocks = 1024;

template <class T>
__global__ void rmsnorm_dw_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                          const Acc<T>* __restrict__ rstd,
                                          Acc<T>* __restrict__ partial, int64_t rows,
                                          int64_t hidden, int64_t rows_per_chunk) {
  using A = Acc<T>;
  __shared__ A stripe_sum[kRowStripes][kColTile + 1];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int64_t col = int64_t(blockIdx.x) * kColTile + tx;
  const int64_t chunk = blockIdx.y;
  const int64_t start = chunk * rows_per_chunk;
  const int64_t end = start + rows_per_chunk < rows ? start + rows_per_chunk : rows;
  A acc = 0;
  if (col < hidden) {
    for (int64_t r = start + ty; r < end; r += kRowStripes)
      acc += to_acc(dy[r * hidden + col]) * (to_acc(x[r * hidden + col]) * rstd[r]);
  }
  stripe_sum[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && col < hidden) {
    A total = 0;
#pragma unroll
    for (int s = 0; s < kRowStripes; ++s) total += stripe_sum[s][tx];
    partial[chunk * hidden + col] = total;
  }
}

// dw[col] = (accumulate ? dw[col] : 0) + sum over chunks, in chunk order.
template <class A, class G>
__global__ void rmsnorm_dw_finish_kernel(const A* __restrict__ partial, G* __restrict__ dw,
                                         int64_t hidden, int64_t chunks, bool accumulate) {
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= hidden) return;
  A total = 0;
  for (int64_t k = 0; k < chunks; ++k) total += partial[k * hidden + col];
  dw[col] = accumulate ? static_cast<G>(static_cast<A>(dw[col]) + total) : static_cast<G>(total);
}

// launch.template operator()<N>() with N = 16 bytes of T when hidden is a multiple of it and
// every base is 16-byte aligned (then every row start is), else N = 1.
template <class T, class Fn>
void with_pack_width(int64_t hidden, std::initializer_list<const void*> bases, Fn&& launch) {
  constexpr int kN = kPack16<T>;
  bool vector = hidden % kN == 0;
  for (const void* p : bases) vector = vector && aligned_to(p, 16);
  if (vector)
    launch.template operator()<kN>();
  else
    launch.template operator()<1>();
}

}  // namespace

void rmsnorm_forward_cuda(const Tensor& x, const Tensor& weight, double eps, Tensor& y,
                          Tensor& rstd) {
  const int64_t rows = x.size(0), hidden = x.size(1);
  if (rows == 0) return;
  cudaStream_t stream = cuda::stream_of(x);
  dispatch_float(x.dtype(), "rmsnorm_forward", [&]<class T>() {
    using A = Acc<T>;
    with_pack_width<T>(hidden, {x.raw(), weight.raw(), y.raw()}, [&]<int N>() {
      const RowLaunch launch = row_launch(rows, (hidden + N - 1) / N);
      rmsnorm_forward_kernel<T, N><<<launch.blocks, kRowBlock, 0, stream>>>(
          x.data<T>(), weight.data<T>(), y.data<T>(), rstd.data<A>(), rows, hidden,
          static_cast<A>(eps), launch.threads_per_row);
      MOE_CUDA_CHECK_LAUNCH();
    });
  });
}

void rmsnorm_backward_cuda(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                           const Tensor& rstd, Tensor& dx, Tensor& grad_weight, bool accumulate) {
  const int64_t rows = x.size(0), hidden = x.size(1);
  cudaStream_t stream = cuda::stream_of(x);
  dispatch_float(x.dtype(), "rmsnorm_backward", [&]<class T>() {
    using A = Acc<T>;
    if (rows > 0) {
      with_pack_width<T>(hidden, {grad_y.raw(), x.raw(), weight.raw(), dx.raw()}, [&]<int N>() {
        const RowLaunch launch = row_launch(rows, (hidden + N - 1) / N);
        rmsnorm_dx_kernel<T, N><<<launch.blocks, kRowBlock, 0, stream>>>(
            grad_y.data<T>(), x.data<T>(), weight.data<T>(), rstd.data<A>(), dx.data<T>(), rows,
            hidden, launch.threads_per_row);
        MOE_CUDA_CHECK_LAUNCH();
      });
    }
    // The chunking depends only on the shape, so the summation order does too.
    const int64_t col_tiles = (hidden + kColTile - 1) / kColTile;
    int64_t chunks = std::min((rows + kMinRowsPerChunk - 1) / kMinRowsPerChunk,
                              std::max<int64_t>(1, kTargetBlocks / col_tiles));
    chunks = std::min<int64_t>(chunks, 65535);
    const int64_t rows_per_chunk = chunks > 0 ? (rows + chunks - 1) / chunks : 0;
    Tensor partial =
        Tensor::empty({std::max<int64_t>(chunks, 1), hidden}, rstd.dtype(), x.device());
    if (chunks > 0) {
      MOE_CHECK(col_tiles <= 0x7fffffffLL, "rmsnorm_backward: hidden ", hidden, " is too wide");
      const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(chunks));
      rmsnorm_dw_partial_kernel<T><<<grid, dim3(kColTile, kRowStripes), 0, stream>>>(
          grad_y.data<T>(), x.data<T>(), rstd.data<A>(), partial.data<A>(), rows, hidden,
          rows_per_chunk);
      MOE_CUDA_CHECK_LAUNCH();
    }
    constexpr int kThreads = 256;
    rmsnorm_dw_finish_kernel<A, A>
        <<<cuda::blocks_for(hidden, kThreads, 0x7fffffffLL), kThreads, 0, stream>>>(
            partial.data<A>(), grad_weight.data<A>(), hidden, chunks, accumulate);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::ops::detail
