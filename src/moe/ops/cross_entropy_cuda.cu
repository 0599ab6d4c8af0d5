// CUDA fused linear + cross-entropy (cross_entropy.h): the vocabulary is walked in chunks of
// C rows of W, so only a [T, C] fp32 logits buffer ever exists (never [T, V]).
//
// Forward, per chunk: logits = h W_chunk^T (ops::gemm, cuBLASLt, fp32 output), then one block
// per token folds the chunk's row into the token's running (max m, sum s) pair,
//   (m, s) (+) (m', s') = (M, s e^(m - M) + s' e^(m' - M)),  M = max(m, m')   (online logsumexp)
// and copies the label's logit when its column is in the chunk. A single-block kernel then
// turns the merged partials into lse, the per-token losses, N and the loss (fixed-order sums in
// double: deterministic, no atomics, no host synchronisation).
// Backward, per chunk: recompute the logits, one kernel writes
//   dz = c_t (exp(z - lse_t) - [v == y_t]),  c_t = g w_t / N
// in place (f32) or into a bf16 buffer (bf16 inputs, the GEMM's operand type), then
// dh_acc += dz W_chunk (fp32 accumulator) and dW_chunk += dz^T h through ops::gemm.
// NaN logits propagate into s (and so into the loss); a masked token's dz is written as 0.
#include <algorithm>
#include <cmath>

#include "moe/core/cuda_utils.h"
#include "moe/ops/cross_entropy_cuda.h"
#include "moe/ops/gemm.h"

namespace moe::ops::detail {
namespace {

constexpr int kRowThreads = 256;        // one block per token row of a chunk
constexpr int kFinalizeThreads = 1024;  // the single block of the finalize kernel
constexpr int kElementThreads = 256;

// Folds one logit z into the running pair (m, s): one exp per element. m = -inf means empty
// (s = 0). z = NaN makes s NaN (propagates); z = -inf adds nothing.
__device__ __forceinline__ void fold_logit(float& m, float& s, float z) {
  if (z > m) {
    s = s * expf(m - z) + 1.0f;  // m = -inf: s = 0 * 0 + 1
    m = z;
  } else if (z != -INFINITY) {
    s += expf(z - m);
  }
}

// (m, s) (+)= (m2, s2). Commutative in its result, so the xor butterfly gives every lane the
// same pair.
__device__ __forceinline__ void merge_pair(float& m, float& s, float m2, float s2) {
  const float big = fmaxf(m, m2);
  if (big == -INFINITY) {  // both empty
    s = s + s2;
    m = big;
    return;
  }
  s = s * expf(m - big) + s2 * expf(m2 - big);
  m = big;
}

__global__ void init_partials_kernel(int64_t n, float* max, float* sum_exp, float* label_logit) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    max[i] = -INFINITY;
    sum_exp[i] = 0.0f;
    label_logit[i] = 0.0f;
  }
}

// One block per row of the chunk logits [rows, cols]; columns are vocabulary ids
// first_column + j. Blocks stride over rows when rows > gridDim.x.
template <class L>
__global__ void chunk_logsumexp_kernel(const float* __restrict__ logits, int64_t rows, int64_t cols,
                                       const L* __restrict__ labels, int64_t first_column,
                                       float* __restrict__ run_max, float* __restrict__ run_sum,
                                       float* __restrict__ label_logit) {
  __shared__ float warp_max[kRowThreads / 32];
  __shared__ float warp_sum[kRowThreads / 32];
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* z = logits + row * cols;
    float m = -INFINITY, s = 0.0f;
    for (int64_t j = threadIdx.x; j < cols; j += kRowThreads) fold_logit(m, s, z[j]);
    for (int offset = 16; offset > 0; offset /= 2) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
      merge_pair(m, s, m2, s2);
    }
    if (lane == 0) {
      warp_max[warp] = m;
      warp_sum[warp] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float bm = run_max[row], bs = run_sum[row];
      for (int w = 0; w < kRowThreads / 32; ++w) merge_pair(bm, bs, warp_max[w], warp_sum[w]);
      run_max[row] = bm;
      run_sum[row] = bs;
      const int64_t local = static_cast<int64_t>(labels[row]) - first_column;
      if (local >= 0 && local < cols) label_logit[row] = z[local];
    }
    __syncthreads();  // warp_max / warp_sum are reused by the next row
  }
}

// out = a (+) b elementwise over tokens; out may alias a.
__global__ void merge_partials_kernel(int64_t n, const float* a_max, const float* a_sum,
                                      const float* a_label, const float* b_max, const float* b_sum,
                                      const float* b_label, float* out_max, float* out_sum,
                                      float* out_label) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float m = a_max[i], s = a_sum[i];
    merge_pair(m, s, b_max[i], b_sum[i]);
    const float label = a_label[i] + b_label[i];
    out_max[i] = m;
    out_sum[i] = s;
    out_label[i] = label;
  }
}

// Fixed-order block sum of two doubles (every thread gets them). scratch: 2 * 32 doubles.
__device__ void block_sum2(double& x, double& y, double* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(0xffffffffu, x, offset);
    y += __shfl_xor_sync(0xffffffffu, y, offset);
  }
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  if (lane == 0) {
    scratch[warp] = x;
    scratch[32 + warp] = y;
  }
  __syncthreads();
  x = 0;
  y = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x) / 32; ++w) {
    x += scratch[w];
    y += scratch[32 + w];
  }
}

// One block: lse_t, l_t, then loss and N (formulas in cross_entropy.h). A label outside
// [0, vocab_size) that is not ignore_index gives l_t = NaN (no host check possible here).
template <class L>
__global__ void finalize_kernel(int64_t tokens, const float* __restrict__ max,
                                const float* __restrict__ sum_exp,
                                const float* __restrict__ label_logit, const L* __restrict__ labels,
                                const float* __restrict__ mask, int64_t ignore_index,
                                int64_t vocab_size, bool mean, float* __restrict__ logsumexp,
                                float* __restrict__ token_losses, float* __restrict__ loss,
                                float* __restrict__ weight_sum) {
  __shared__ double scratch[64];
  double total = 0, weights = 0;
  for (int64_t t = threadIdx.x; t < tokens; t += blockDim.x) {
    const float lse = max[t] + logf(sum_exp[t]);
    logsumexp[t] = lse;
    const int64_t y = static_cast<int64_t>(labels[t]);
    float l = 0.0f;
    if (y != ignore_index) {
      l = y >= 0 && y < vocab_size ? lse - label_logit[t] : NAN;
      const float w = mask != nullptr ? mask[t] : 1.0f;
      if (w != 0.0f) {  // a masked-out token contributes nothing, not even NaN
        total += static_cast<double>(w) * static_cast<double>(l);
        weights += static_cast<double>(w);
      }
    }
    token_losses[t] = l;
  }
  block_sum2(total, weights, scratch);
  if (threadIdx.x == 0) {
    *loss = static_cast<float>(mean ? (weights > 0 ? total / weights : 0.0) : total);
    *weight_sum = static_cast<float>(weights);
  }
}

// c_t = g w_t / N (mean) or g w_t (sum); 0 for ignored or masked tokens, and when N = 0.
template <class L>
__global__ void token_factor_kernel(int64_t tokens, const L* __restrict__ labels,
                                    const float* __restrict__ mask,
                                    const float* __restrict__ weight_sum, int64_t ignore_index,
                                    bool mean, float grad_loss, float* __restrict__ factor) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < tokens;
       t += int64_t(gridDim.x) * blockDim.x) {
    float c = 0.0f;
    const float w = mask != nullptr ? mask[t] : 1.0f;
    if (static_cast<int64_t>(labels[t]) != ignore_index && w != 0.0f) {
      if (!mean) {
        c = grad_loss * w;
      } else {
        const float n = *weight_sum;
        c = n > 0.0f ? grad_loss * w / n : 0.0f;
      }
    }
    factor[t] = c;
  }
}

// dz [rows, cols] from the chunk logits (may alias when D = float): blockIdx.y strides over
// rows, blockIdx.x / threadIdx.x over columns.
template <class D, class L>
__global__ void d_logits_kernel(const float* logits, D* dz, int64_t rows, int64_t cols,
                                const float* __restrict__ factor,
                                const float* __restrict__ logsumexp, const L* __restrict__ labels,
                                int64_t first_column) {
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const float c = factor[row];
    const float lse = logsumexp[row];
    const int64_t local = static_cast<int64_t>(labels[row]) - first_column;
    const float* z = logits + row * cols;
    D* d = dz + row * cols;
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < cols;
         j += int64_t(gridDim.x) * blockDim.x) {
      float v = 0.0f;
      if (c != 0.0f) v = c * (expf(z[j] - lse) - (j == local ? 1.0f : 0.0f));
      cuda::store_float(d + j, v);
    }
  }
}

// N = sum_t w_t over the labelled, unmasked tokens, summed exactly as finalize_kernel sums it
// (same loop, same block reduction), so both give the same float. One block.
template <class L>
__global__ void weight_sum_kernel(int64_t tokens, const L* __restrict__ labels,
                                  const float* __restrict__ mask, int64_t ignore_index,
                                  float* __restrict__ weight_sum) {
  __shared__ double scratch[64];
  double unused = 0, weights = 0;
  for (int64_t t = threadIdx.x; t < tokens; t += blockDim.x) {
    if (static_cast<int64_t>(labels[t]) != ignore_index) {
      const float w = mask != nullptr ? mask[t] : 1.0f;
      if (w != 0.0f) weights += static_cast<double>(w);
    }
  }
  block_sum2(unused, weights, scratch);
  if (threadIdx.x == 0) *weight_sum = static_cast<float>(weights);
}

// lse_t = m_t + log s_t for a chunk's rows: finalize_kernel's expression, so the same bits.
__global__ void row_logsumexp_kernel(int64_t rows, const float* __restrict__ max,
                                     const float* __restrict__ sum_exp, float* __restrict__ lse) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < rows;
       t += int64_t(gridDim.x) * blockDim.x)
    lse[t] = max[t] + logf(sum_exp[t]);
}

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(rows, 1), 1 << 20));
}

template <class Fn>
void with_label_type(const Tensor& labels, Fn&& fn) {
  dispatch<DType::i64, DType::i32>(labels.dtype(), "cross_entropy (labels)", std::forward<Fn>(fn));
}

// A [rows, cols] view of the front of a flat buffer.
Tensor front_view(const Tensor& flat, int64_t rows, int64_t cols) {
  return flat.rows(0, rows * cols).reshape({rows, cols});
}

// dz [rows, cols] (f32: may alias logits; bf16) from the logits of vocabulary columns
// first_column + j, for the rows whose factors, lse and labels start at the given pointers.
template <class L>
void launch_d_logits(const Tensor& logits, Tensor& dz, int64_t rows, int64_t cols,
                     const float* factor, const float* logsumexp, const L* labels,
                     int64_t first_column, cudaStream_t stream) {
  const dim3 grid(
      static_cast<unsigned>(std::min<int64_t>((cols + kElementThreads - 1) / kElementThreads, 1024)),
      static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  dispatch<DType::f32, DType::bf16>(dz.dtype(), "cross_entropy (dz)", [&]<class D>() {
    d_logits_kernel<D, L><<<grid, kElementThreads, 0, stream>>>(
        logits.data<float>(), dz.data<D>(), rows, cols, factor, logsumexp, labels, first_column);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void cross_entropy_partials_cuda(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                                 int64_t vocab_start, int64_t chunk_size,
                                 CrossEntropyPartials& out) {
  const int64_t tokens = hidden.size(0), shard = weight.size(0);
  if (tokens == 0) return;
  cudaStream_t stream = cuda::stream_of(hidden);
  init_partials_kernel<<<cuda::blocks_for(tokens, kElementThreads), kElementThreads, 0, stream>>>(
      tokens, out.max.data<float>(), out.sum_exp.data<float>(), out.label_logit.data<float>());
  MOE_CUDA_CHECK_LAUNCH();
  if (shard == 0) return;
  const int64_t chunk = std::min(chunk_size, shard);
  const Tensor buffer = Tensor::empty({tokens * chunk}, DType::f32, hidden.device());
  for (int64_t first = 0; first < shard; first += chunk) {
    const int64_t cols = std::min(chunk, shard - first);
    Tensor logits = front_view(buffer, tokens, cols);
    gemm(hidden, false, weight.rows(first, cols), true, logits);
    with_label_type(labels, [&]<class L>() {
      chunk_logsumexp_kernel<L><<<row_blocks(tokens), kRowThreads, 0, stream>>>(
          logits.data<float>(), tokens, cols, labels.data<L>(), vocab_start + first,
          out.max.data<float>(), out.sum_exp.data<float>(), out.label_logit.data<float>());
      MOE_CUDA_CHECK_LAUNCH();
    });
  }
}

void cross_entropy_merge_cuda(const CrossEntropyPartials& a, const CrossEntropyPartials& b,
                              CrossEntropyPartials& out) {
  const int64_t tokens = a.max.numel();
  if (tokens == 0) return;
  merge_partials_kernel<<<cuda::blocks_for(tokens, kElementThreads), kElementThreads, 0,
                          cuda::stream_of(a.max)>>>(
      tokens, a.max.data<float>(), a.sum_exp.data<float>(), a.label_logit.data<float>(),
      b.max.data<float>(), b.sum_exp.data<float>(), b.label_logit.data<float>(),
      out.max.data<float>(), out.sum_exp.data<float>(), out.label_logit.data<float>());
  MOE_CUDA_CHECK_LAUNCH();
}

void cross_entropy_finalize_cuda(const CrossEntropyPartials& merged, const Tensor& labels,
                                 const Tensor& loss_mask, int64_t vocab_size,
                                 const CrossEntropyOptions& options, CrossEntropyResult& out) {
  // Runs for tokens = 0 too: it writes loss = 0 and N = 0.
  with_label_type(labels, [&]<class L>() {
    finalize_kernel<L><<<1, kFinalizeThreads, 0, cuda::stream_of(labels)>>>(
        labels.numel(), merged.max.data<float>(), merged.sum_exp.data<float>(),
        merged.label_logit.data<float>(), labels.data<L>(),
        loss_mask.defined() ? loss_mask.data<float>() : nullptr, options.ignore_index, vocab_size,
        options.reduction == CrossEntropyReduction::mean, out.logsumexp.data<float>(),
        out.token_losses.data<float>(), out.loss.data<float>(), out.weight_sum.data<float>());
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void linear_cross_entropy_backward_cuda(double grad_loss, const Tensor& hidden,
                                        const Tensor& weight, const Tensor& labels,
                                        const Tensor& loss_mask, const CrossEntropyResult& saved,
                                        Tensor& grad_weight, const CrossEntropyOptions& options,
                                        int64_t vocab_start, Tensor& grad_hidden) {
  const int64_t tokens = hidden.size(0), hidden_size = hidden.size(1), shard = weight.size(0);
  if (tokens == 0 || hidden_size == 0) return;  // dh is empty; dW += 0
  if (shard == 0) {
    grad_hidden.zero_();
    return;
  }
  cudaStream_t stream = cuda::stream_of(hidden);
  const Device device = hidden.device();
  const bool half = hidden.dtype() == DType::bf16;

  Tensor factor = Tensor::empty({tokens}, DType::f32, device);
  with_label_type(labels, [&]<class L>() {
    token_factor_kernel<L>
        <<<cuda::blocks_for(tokens, kElementThreads), kElementThreads, 0, stream>>>(
            tokens, labels.data<L>(), loss_mask.defined() ? loss_mask.data<float>() : nullptr,
            saved.weight_sum.data<float>(), options.ignore_index,
            options.reduction == CrossEntropyReduction::mean, static_cast<float>(grad_loss),
            factor.data<float>());
    MOE_CUDA_CHECK_LAUNCH();
  });

  // dh accumulates over chunks in fp32; for f32 inputs that is grad_hidden itself.
  Tensor dh_acc = half ? Tensor::empty({tokens, hidden_size}, DType::f32, device) : grad_hidden;
  const int64_t chunk = std::min(options.chunk_size, shard);
  const Tensor logits_buffer = Tensor::empty({tokens * chunk}, DType::f32, device);
  const Tensor dz_buffer =
      half ? Tensor::empty({tokens * chunk}, DType::bf16, device) : logits_buffer;
  for (int64_t first = 0; first < shard; first += chunk) {
    const int64_t cols = std::min(chunk, shard - first);
    const Tensor w_chunk = weight.rows(first, cols);
    Tensor logits = front_view(logits_buffer, tokens, cols);
    gemm(hidden, false, w_chunk, true, logits);
    Tensor dz = front_view(dz_buffer, tokens, cols);  // aliases logits for f32
    with_label_type(labels, [&]<class L>() {
      launch_d_logits<L>(logits, dz, tokens, cols, factor.data<float>(),
                         saved.logsumexp.data<float>(), labels.data<L>(), vocab_start + first,
                         stream);
    });
    gemm(dz, false, w_chunk, false, dh_acc, 1.0f, first == 0 ? 0.0f : 1.0f);
    if (grad_weight.defined()) {
      Tensor dw_chunk = grad_weight.rows(first, cols);
      gemm(dz, true, hidden, false, dw_chunk, 1.0f, 1.0f);
    }
  }
  if (half) grad_hidden.copy_(dh_acc.to(DType::bf16));
}

// Token chunks of the whole vocabulary (cross_entropy.h): per chunk of rows [t0, t0 + n),
//   logits [n, V] = h_rows W^T (fp32), the rows' (max, sum) in one pass, lse_rows,
//   dz = c_t (softmax - onehot) (bf16 buffer, or in place for f32), dh_rows = dz W,
//   dW += dz^T h_rows;
// then the loss, per-token losses and lse of all tokens from the partials (finalize_kernel).
// c_t needs N over all tokens before the first chunk: weight_sum_kernel computes it first.
void linear_cross_entropy_forward_backward_cuda(double grad_loss, const Tensor& hidden,
                                                const Tensor& weight, const Tensor& labels,
                                                const Tensor& loss_mask, Tensor& grad_weight,
                                                const CrossEntropyOptions& options,
                                                CrossEntropyResult& result, Tensor& grad_hidden) {
  const int64_t tokens = hidden.size(0), vocab = weight.size(0);
  cudaStream_t stream = cuda::stream_of(hidden);
  const Device device = hidden.device();
  const bool mean = options.reduction == CrossEntropyReduction::mean;
  const float* mask = loss_mask.defined() ? loss_mask.data<float>() : nullptr;
  CrossEntropyPartials partials{Tensor::empty({tokens}, DType::f32, device),
                                Tensor::empty({tokens}, DType::f32, device),
                                Tensor::empty({tokens}, DType::f32, device)};
  if (tokens > 0) {
    init_partials_kernel<<<cuda::blocks_for(tokens, kElementThreads), kElementThreads, 0,
                           stream>>>(tokens, partials.max.data<float>(),
                                     partials.sum_exp.data<float>(),
                                     partials.label_logit.data<float>());
    MOE_CUDA_CHECK_LAUNCH();
  }
  Tensor factor = Tensor::empty({tokens}, DType::f32, device);
  with_label_type(labels, [&]<class L>() {
    weight_sum_kernel<L><<<1, kFinalizeThreads, 0, stream>>>(
        tokens, labels.data<L>(), mask, options.ignore_index, result.weight_sum.data<float>());
    MOE_CUDA_CHECK_LAUNCH();
    if (tokens == 0) return;
    token_factor_kernel<L>
        <<<cuda::blocks_for(tokens, kElementThreads), kElementThreads, 0, stream>>>(
            tokens, labels.data<L>(), mask, result.weight_sum.data<float>(),
            options.ignore_index, mean, static_cast<float>(grad_loss), factor.data<float>());
    MOE_CUDA_CHECK_LAUNCH();
  });

  if (tokens > 0) {
    // Equal chunks of at most fused_chunk_elements logits each.
    const int64_t max_rows = std::max<int64_t>(1, options.fused_chunk_elements / vocab);
    const int64_t chunks = (tokens + max_rows - 1) / max_rows;
    const int64_t rows_per_chunk = (tokens + chunks - 1) / chunks;
    const bool half = hidden.dtype() == DType::bf16;
    const Tensor logits_buffer = Tensor::empty({rows_per_chunk * vocab}, DType::f32, device);
    const Tensor dz_buffer =
        half ? Tensor::empty({rows_per_chunk * vocab}, DType::bf16, device) : logits_buffer;
    for (int64_t t0 = 0; t0 < tokens; t0 += rows_per_chunk) {
      const int64_t rows = std::min(rows_per_chunk, tokens - t0);
      const Tensor h_rows = hidden.rows(t0, rows);
      Tensor logits = front_view(logits_buffer, rows, vocab);
      gemm(h_rows, false, weight, true, logits);
      Tensor lse_rows = result.logsumexp.rows(t0, rows);
      Tensor dz = front_view(dz_buffer, rows, vocab);  // aliases logits for f32
      with_label_type(labels, [&]<class L>() {
        const L* labels_rows = labels.data<L>() + t0;
        chunk_logsumexp_kernel<L><<<row_blocks(rows), kRowThreads, 0, stream>>>(
            logits.data<float>(), rows, vocab, labels_rows, 0, partials.max.data<float>() + t0,
            partials.sum_exp.data<float>() + t0, partials.label_logit.data<float>() + t0);
        MOE_CUDA_CHECK_LAUNCH();
        row_logsumexp_kernel<<<cuda::blocks_for(rows, kElementThreads), kElementThreads, 0,
                               stream>>>(rows, partials.max.data<float>() + t0,
                                         partials.sum_exp.data<float>() + t0,
                                         lse_rows.data<float>());
        MOE_CUDA_CHECK_LAUNCH();
        launch_d_logits<L>(logits, dz, rows, vocab, factor.data<float>() + t0,
                           lse_rows.data<float>(), labels_rows, 0, stream);
      });
      Tensor dh_rows = grad_hidden.rows(t0, rows);
      gemm(dz, false, weight, false, dh_rows);
      if (grad_weight.defined()) gemm(dz, true, h_rows, false, grad_weight, 1.0f, 1.0f);
    }
  }
  cross_entropy_finalize_cuda(partials, labels, loss_mask, vocab, options, result);
}

}  // namespace moe::ops::detail
