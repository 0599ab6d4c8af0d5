// CUDA load-balancing ops of the router (router.h; formulas and CPU reference in
// router_losses_cpu.cpp): histograms by integer atomics (exact, so deterministic), and the
// losses as warp-per-row partial sums in fp64 followed by one fixed-order block reduction
// that writes the 0-d loss on the device (no host synchronisation).
#include <cmath>

#include "moe/core/cuda_utils.h"
#include "moe/ops/router_cuda.h"
#include "moe/ops/router_warp.cuh"

namespace moe::ops::detail {
namespace {

constexpr int kThreads = 256;

__global__ void histogram_kernel(const int32_t* ids, int64_t n, int64_t topk, int64_t num_experts,
                                 int64_t num_sequences, int64_t* counts) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t e = ids[i];
    if (e < 0 || e >= num_experts) continue;  // dropped slot (or invalid: no host check here)
    const int64_t sequence = (i / topk) % num_sequences;
    atomicAdd(reinterpret_cast<unsigned long long*>(counts + sequence * num_experts + e), 1ull);
  }
}

template <class T>
__global__ void aux_scores_kernel(const T* logits, int64_t rows, int64_t cols, ScoreKind kind,
                                  T* scores) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int64_t t = blockIdx.x * int64_t(warps) + warp; t < rows; t += int64_t(gridDim.x) * warps) {
    const T* z = logits + t * cols;
    double m = 0;
    if (kind == ScoreKind::softmax) {
      m = -INFINITY;
      for (int64_t e = lane; e < cols; e += kWarp) m = fmax(m, static_cast<double>(z[e]));
      m = warp_max(m);
    }
    auto value = [&](int64_t e) {
      const double zv = static_cast<double>(z[e]);
      return kind == ScoreKind::softmax ? exp(zv - m) : sigmoid_f64(zv);
    };
    double sum = 0;
    for (int64_t e = lane; e < cols; e += kWarp) sum += value(e);
    sum = warp_sum(sum);
    for (int64_t e = lane; e < cols; e += kWarp)
      scores[t * cols + e] = static_cast<T>(value(e) / sum);
  }
}

// partial[t] = sum_e scores[t, e] * counts[t mod B, e]
template <class T, class C>
__global__ void weighted_rows_kernel(const T* scores, const C* counts, int64_t rows, int64_t cols,
                                     int64_t num_sequences, double* partial) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int64_t t = blockIdx.x * int64_t(warps) + warp; t < rows; t += int64_t(gridDim.x) * warps) {
    const C* c = counts + (t % num_sequences) * cols;
    double acc = 0;
    for (int64_t e = lane; e < cols; e += kWarp)
      acc += static_cast<double>(scores[t * cols + e]) * static_cast<double>(c[e]);
    acc = warp_sum(acc);
    if (lane == 0) partial[t] = acc;
  }
}

// d_logits[t] += the gradient of sum_e s_te g_te, g_te = scale * counts[t mod B, e]
// (rules in router_losses_cpu.cpp).
template <class T, class C>
__global__ void weighted_rows_backward_kernel(double scale, const T* scores, const C* counts,
                                              int64_t num_sequences, const T* logits, int64_t rows,
                                              int64_t cols, ScoreKind kind, T* d_logits) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int64_t t = blockIdx.x * int64_t(warps) + warp; t < rows; t += int64_t(gridDim.x) * warps) {
    const C* c = counts + (t % num_sequences) * cols;
    T* d = d_logits + t * cols;
    if (kind == ScoreKind::softmax) {
      const T* s = scores + t * cols;
      double dot = 0;
      for (int64_t e = lane; e < cols; e += kWarp)
        dot += static_cast<double>(s[e]) * scale * static_cast<double>(c[e]);
      dot = warp_sum(dot);
      for (int64_t e = lane; e < cols; e += kWarp)
        d[e] =
            static_cast<T>(static_cast<double>(d[e]) +
                           static_cast<double>(s[e]) * (scale * static_cast<double>(c[e]) - dot));
    } else {
      const T* z = logits + t * cols;
      double sum = 0;
      for (int64_t e = lane; e < cols; e += kWarp) sum += sigmoid_f64(static_cast<double>(z[e]));
      sum = warp_sum(sum);
      double dot = 0;
      for (int64_t e = lane; e < cols; e += kWarp)
        dot += sigmoid_f64(static_cast<double>(z[e])) / sum * scale * static_cast<double>(c[e]);
      dot = warp_sum(dot);
      for (int64_t e = lane; e < cols; e += kWarp) {
        const double sig = sigmoid_f64(static_cast<double>(z[e]));
        d[e] = static_cast<T>(static_cast<double>(d[e]) +
                              (scale * static_cast<double>(c[e]) - dot) / sum * sig * (1 - sig));
      }
    }
  }
}

// Row logsumexp, by the whole warp (every lane gets it).
template <class T>
__device__ double warp_logsumexp(const T* z, int64_t cols, int lane) {
  double m = -INFINITY;
  for (int64_t e = lane; e < cols; e += kWarp) m = fmax(m, static_cast<double>(z[e]));
  m = warp_max(m);
  double sum = 0;
  for (int64_t e = lane; e < cols; e += kWarp) sum += exp(static_cast<double>(z[e]) - m);
  return m + log(warp_sum(sum));
}

template <class T>
__global__ void z_loss_rows_kernel(const T* logits, int64_t rows, int64_t cols, double* partial) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int64_t t = blockIdx.x * int64_t(warps) + warp; t < rows; t += int64_t(gridDim.x) * warps) {
    const double lse = warp_logsumexp(logits + t * cols, cols, lane);
    if (lane == 0) partial[t] = lse * lse;
  }
}

// d z_te += scale * 2 lse_t softmax(z_t)_e
template <class T>
__global__ void z_loss_backward_kernel(double scale, const T* logits, int64_t rows, int64_t cols,
                                       T* d_logits) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int64_t t = blockIdx.x * int64_t(warps) + warp; t < rows; t += int64_t(gridDim.x) * warps) {
    const T* z = logits + t * cols;
    T* d = d_logits + t * cols;
    const double lse = warp_logsumexp(z, cols, lane);
    for (int64_t e = lane; e < cols; e += kWarp)
      d[e] = static_cast<T>(static_cast<double>(d[e]) +
                            scale * 2 * lse * exp(static_cast<double>(z[e]) - lse));
  }
}

constexpr unsigned kRowThreads = kRowWarpsPerBlock * kWarp;

#define MOE_COUNT_DTYPES DType::i64, DType::i32, DType::f32, DType::f64

}  // namespace

void histogram_cuda(const Tensor& expert_ids, int64_t num_experts, int64_t num_sequences,
                    Tensor& counts) {
  const int64_t n = expert_ids.numel();
  if (n == 0) return;
  histogram_kernel<<<cuda::blocks_for(n, kThreads), kThreads, 0, cuda::stream_of(expert_ids)>>>(
      expert_ids.data<int32_t>(), n, expert_ids.size(1), num_experts, num_sequences,
      counts.data<int64_t>());
  MOE_CUDA_CHECK_LAUNCH();
}

void aux_loss_scores_cuda(const Tensor& logits, ScoreKind kind, Tensor& scores) {
  const int64_t rows = logits.size(0), cols = logits.size(1);
  if (rows == 0) return;
  dispatch<DType::f64, DType::f32>(logits.dtype(), "aux_loss_scores", [&]<class T>() {
    aux_scores_kernel<T><<<row_blocks(rows), kRowThreads, 0, cuda::stream_of(logits)>>>(
        logits.data<T>(), rows, cols, kind, scores.data<T>());
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void weighted_score_sum_cuda(const Tensor& scores, const Tensor& counts, int64_t num_sequences,
                             double scale, Tensor& loss) {
  const int64_t rows = scores.size(0), cols = scores.size(1);
  cudaStream_t stream = cuda::stream_of(scores);
  // One partial per row (at least one element, so an empty input still reduces to 0).
  Tensor partial = Tensor::zeros({rows > 0 ? rows : 1}, DType::f64, scores.device());
  dispatch<DType::f64, DType::f32>(scores.dtype(), "aux loss", [&]<class T>() {
    if (rows > 0) {
      dispatch<MOE_COUNT_DTYPES>(counts.dtype(), "aux loss counts", [&]<class C>() {
        weighted_rows_kernel<T, C><<<row_blocks(rows), kRowThreads, 0, stream>>>(
            scores.data<T>(), counts.data<C>(), rows, cols, num_sequences, partial.data<double>());
        MOE_CUDA_CHECK_LAUNCH();
      });
    }
    scaled_sum_kernel<T><<<1, kReduceThreads, 0, stream>>>(partial.data<double>(), partial.numel(),
                                                           scale, loss.data<T>());
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void weighted_score_sum_backward_cuda(double scale, const Tensor& scores, const Tensor& counts,
                                      int64_t num_sequences, const Tensor& logits, ScoreKind kind,
                                      Tensor& d_logits) {
  const int64_t rows = logits.size(0), cols = logits.size(1);
  if (rows == 0) return;
  dispatch<DType::f64, DType::f32>(logits.dtype(), "aux loss backward", [&]<class T>() {
    dispatch<MOE_COUNT_DTYPES>(counts.dtype(), "aux loss counts", [&]<class C>() {
      weighted_rows_backward_kernel<T, C>
          <<<row_blocks(rows), kRowThreads, 0, cuda::stream_of(logits)>>>(
              scale, scores.data<T>(), counts.data<C>(), num_sequences, logits.data<T>(), rows,
              cols, kind, d_logits.data<T>());
      MOE_CUDA_CHECK_LAUNCH();
    });
  });
}

void z_loss_cuda(const Tensor& logits, double scale, Tensor& loss) {
  const int64_t rows = logits.size(0), cols = logits.size(1);
  cudaStream_t stream = cuda::stream_of(logits);
  Tensor partial = Tensor::zeros({rows > 0 ? rows : 1}, DType::f64, logits.device());
  dispatch<DType::f64, DType::f32>(logits.dtype(), "z_loss", [&]<class T>() {
    if (rows > 0) {
      z_loss_rows_kernel<T><<<row_blocks(rows), kRowThreads, 0, stream>>>(
          logits.data<T>(), rows, cols, partial.data<double>());
      MOE_CUDA_CHECK_LAUNCH();
    }
    scaled_sum_kernel<T><<<1, kReduceThreads, 0, stream>>>(partial.data<double>(), partial.numel(),
                                                           scale, loss.data<T>());
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void z_loss_backward_cuda(double scale, const Tensor& logits, Tensor& d_logits) {
  const int64_t rows = logits.size(0), cols = logits.size(1);
  if (rows == 0) return;
  dispatch<DType::f64, DType::f32>(logits.dtype(), "z_loss backward", [&]<class T>() {
    z_loss_backward_kernel<T><<<row_blocks(rows), kRowThreads, 0, cuda::stream_of(logits)>>>(
        scale, logits.data<T>(), rows, cols, d_logits.data<T>());
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::ops::detail
