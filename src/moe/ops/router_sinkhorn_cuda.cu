// CUDA sinkhorn balancing and input jitter of the router (router.h; CPU reference and
// formulas in router_sinkhorn_cpu.cpp).
//
// Sinkhorn iterates until a data-dependent convergence test; to keep that test on the device
// (no host synchronisation, no launch per iteration), the whole iteration runs in ONE thread
// block: C = exp(z) is precomputed in fp64, d0 lives in global memory (written and read by
// this block only, ordered by __syncthreads), d1 in shared memory. Row sums are per warp, and
// column sums use lane = column, warps = row slices, then a fixed-order sum over warps, so the
// result is deterministic. Sinkhorn is a legacy balancing option: speed is secondary.
#include <cmath>
#include <type_traits>

#include "moe/core/cuda_utils.h"
#include "moe/core/rng.h"
#include "moe/ops/router_cuda.h"
#include "moe/ops/router_warp.cuh"

namespace moe::ops::detail {
namespace {

constexpr double kSinkhornEps = 1e-8;
constexpr int kSinkhornWarps = 32;
constexpr int kThreads = 256;
constexpr int kMaxSharedBytes = 48 * 1024;

template <class T>
__global__ void exp_kernel(const T* z, int64_t n, double* cost) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    cost[i] = exp(static_cast<double>(z[i]));
}

// blockDim = kSinkhornWarps * 32 (the launch bound keeps registers within a 1024-thread
// block). Shared: d1 [E], column partials [32][33].
__global__ void __launch_bounds__(kSinkhornWarps* kWarp)
    sinkhorn_kernel(const double* cost, int64_t rows, int64_t cols, double tol, int max_iters,
                    double* d0, double* d1_out) {
  extern __shared__ double shared_f64[];
  double* d1 = shared_f64;
  double* column_part = shared_f64 + cols;  // [kSinkhornWarps][kWarp + 1]
  __shared__ int converged;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t e = threadIdx.x; e < cols; e += blockDim.x) d1[e] = 1.0;
  __syncthreads();
  for (int iter = 0; iter < max_iters; ++iter) {
    // d0_t = 1 / (T (sum_e C_te d1_e + eps)), one warp per row.
    for (int64_t t = warp; t < rows; t += kSinkhornWarps) {
      double acc = 0;
      for (int64_t e = lane; e < cols; e += kWarp) acc += cost[t * cols + e] * d1[e];
      acc = warp_sum(acc);
      if (lane == 0) d0[t] = 1.0 / (static_cast<double>(rows) * (acc + kSinkhornEps));
    }
    __syncthreads();
    // d1_e = 1 / (E (sum_t d0_t C_te + eps)), 32 columns at a time; warp 0 also adds up
    // |d1_new - d1_old| for the convergence test.
    double error = 0;
    for (int64_t e0 = 0; e0 < cols; e0 += kWarp) {
      const int64_t e = e0 + lane;
      double acc = 0;
      if (e < cols)
        for (int64_t t = warp; t < rows; t += kSinkhornWarps) acc += d0[t] * cost[t * cols + e];
      column_part[warp * (kWarp + 1) + lane] = acc;
      __syncthreads();
      if (warp == 0 && e < cols) {
        double column = 0;
        for (int w = 0; w < kSinkhornWarps; ++w) column += column_part[w * (kWarp + 1) + lane];
        const double updated = 1.0 / (static_cast<double>(cols) * (column + kSinkhornEps));
        error += fabs(d1[e] - updated);
        d1[e] = updated;
      }
      __syncthreads();
    }
    if (warp == 0) {
      error = warp_sum(error);
      if (lane == 0) converged = error / static_cast<double>(cols) <= tol;
    }
    __syncthreads();
    if (converged) break;  // block-uniform
    __syncthreads();       // everyone has read `converged` before warp 0 rewrites it
  }
  for (int64_t e = threadIdx.x; e < cols; e += blockDim.x) d1_out[e] = d1[e];
}

template <class T>
__global__ void sinkhorn_apply_kernel(const T* z, const double* d0, const double* d1, int64_t rows,
                                      int64_t cols, T* out) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / cols, e = i % cols;
    out[i] = static_cast<T>(d1[e] * exp(static_cast<double>(z[i])) * d0[t]);
  }
}

// The host-identical arithmetic of router_sinkhorn_cpu.cpp (apply_jitter): one fp32 (fp64
// for double) multiply and the bit-level rounding of bf16 / f16.
template <class T>
__global__ void jitter_kernel(const T* x, int64_t n, uint64_t seed, float lo, float hi, T* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float noise = philox_uniform(seed, static_cast<uint64_t>(i), lo, hi);
    if constexpr (std::is_same_v<T, double>)
      y[i] = x[i] * static_cast<double>(noise);
    else
      y[i] = T(static_cast<float>(x[i]) * noise);
  }
}

}  // namespace

void sinkhorn_scaling_cuda(const Tensor& logits, double tol, int max_iters, Tensor& d0,
                           Tensor& d1) {
  const int64_t rows = logits.size(0), cols = logits.size(1);
  const size_t shared_bytes =
      static_cast<size_t>(cols + kSinkhornWarps * (kWarp + 1)) * sizeof(double);
  MOE_CHECK(shared_bytes <= kMaxSharedBytes, "CUDA sinkhorn: E = ", cols,
            " needs more shared memory than ", kMaxSharedBytes, " bytes (E <= 5000)");
  if (rows == 0) return;
  cudaStream_t stream = cuda::stream_of(logits);
  Tensor cost = Tensor::empty({rows, cols}, DType::f64, logits.device());
  dispatch<DType::f64, DType::f32>(logits.dtype(), "CUDA sinkhorn", [&]<class T>() {
    exp_kernel<T><<<cuda::blocks_for(rows * cols, kThreads), kThreads, 0, stream>>>(
        logits.data<T>(), rows * cols, cost.data<double>());
    MOE_CUDA_CHECK_LAUNCH();
  });
  sinkhorn_kernel<<<1, kSinkhornWarps * kWarp, shared_bytes, stream>>>(
      cost.data<double>(), rows, cols, tol, max_iters, d0.data<double>(), d1.data<double>());
  MOE_CUDA_CHECK_LAUNCH();
}

void sinkhorn_apply_cuda(const Tensor& logits, const Tensor& d0, const Tensor& d1, Tensor& out) {
  const int64_t rows = logits.size(0), cols = logits.size(1);
  if (rows == 0) return;
  dispatch<DType::f64, DType::f32>(logits.dtype(), "CUDA sinkhorn", [&]<class T>() {
    sinkhorn_apply_kernel<T>
        <<<cuda::blocks_for(rows * cols, kThreads), kThreads, 0, cuda::stream_of(logits)>>>(
            logits.data<T>(), d0.data<double>(), d1.data<double>(), rows, cols, out.data<T>());
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void jitter_cuda(const Tensor& x, double eps, uint64_t seed, Tensor& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const float lo = static_cast<float>(1.0 - eps), hi = static_cast<float>(1.0 + eps);
  dispatch_float(x.dtype(), "input jitter", [&]<class T>() {
    jitter_kernel<T><<<cuda::blocks_for(n, kThreads), kThreads, 0, cuda::stream_of(x)>>>(
        x.data<T>(), n, seed, lo, hi, out.data<T>());
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::ops::detail
