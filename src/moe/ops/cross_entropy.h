// The output layer's loss: a fused linear + cross-entropy that never holds the full [T, V]
// logits on the GPU (the vocabulary is walked in chunks of columns).
//
//   z_tv = h_t . W_v                         h [T, H] hidden states, W [V, H] output weight
//                                            ([vocab, hidden], as Megatron and HF store it)
//   lse_t = log sum_v exp(z_tv)              (logsumexp, saved for the backward)
//   l_t = lse_t - z_t,y_t                    (per-token loss; 0 where y_t == ignore_index)
//   w_t = mask_t (1 without a mask) for tokens with a label, 0 where y_t == ignore_index
//   N = sum_t w_t                            (the mean's denominator, "weight_sum")
//   loss = sum_t w_t l_t / N                 (reduction mean; 0 when N == 0)
//        = sum_t w_t l_t                     (reduction sum: for normalising over a global
//                                             batch later, e.g. tokens of all micro-batches)
// Labels follow Hugging Face's convention (ignore_index = -100 is excluded from the mean);
// the optional f32 loss mask [T] is Megatron's loss_mask (weights, usually 0/1). An ignored or
// masked-out token adds nothing to the loss, not even a NaN of its own, and its d z row is 0
// (dW = dz^T h still multiplies that 0 by its hidden state, as any GEMM does).
//
// Backward (gradient rule: the activation gradient dh is WRITTEN, the parameter gradient dW is
// ACCUMULATED, +=):
//   d z_tv = g * w_t / N * (softmax_tv - [v == y_t])     g = grad_loss (host scalar); no /N
//                                                        for reduction sum
//   dh = dz W            dW += dz^T h
//
// Vocabulary parallelism (Megatron's vocab-parallel cross-entropy; not wired to a process
// group yet). The forward is split in two so a rank holding the rows [vocab_start,
// vocab_start + V_r) of W can compute its share and the shares can be reduced:
//   1. linear_cross_entropy_partials(h, W_r, y, vocab_start) -> per token
//        m_t = max_{v in shard} z_tv,  s_t = sum_{v in shard} exp(z_tv - m_t),
//        a_t = z_t,y_t if y_t is in the shard, else 0
//   2. combine: M_t = max_r m_rt, S_t = sum_r s_rt exp(m_rt - M_t), A_t = sum_r a_rt,
//        lse_t = M_t + log S_t, l_t = lse_t - A_t, then the reduction above.
//      Across ranks this is an all-reduce MAX of m, then an all-reduce SUM of
//      (s exp(m - M), a), then cross_entropy_combine of the one reduced partial. Here
//      cross_entropy_combine takes the list of shards' partials itself (one rank: one entry).
//   3. linear_cross_entropy_backward(..., vocab_start) on each rank with the combined result:
//      it adds dW into the rank's own rows and returns the rank's share of dh, which the
//      ranks all-reduce (SUM).
// The full forward is exactly partials(vocab_start = 0) followed by combine.
//
// dtypes: hidden and weight share one dtype. CPU: f64, f32, bf16, f16 (16-bit types computed
// in f32; f64 in f64, for the gradient checks). CUDA: f32 and bf16. labels: i64 or i32 [T].
// loss_mask: undefined, or f32 [T]. Results (loss, token_losses, logsumexp, partials) are f64
// for f64 inputs, f32 otherwise. dh has hidden's dtype; grad_weight is f64 for f64 weights and
// f32 otherwise (fp32 main gradients for bf16 weights). Everything lives on hidden's device.
// Labels must lie in [0, V) or equal ignore_index: the CPU throws; CUDA cannot check without a
// host synchronisation, so such a token's loss (and the mean) is NaN instead, which the
// trainer's NaN check reports.
//
// CUDA: per chunk of `chunk_size` vocabulary rows, logits_chunk [T, C] = h W_chunk^T runs
// through cuBLASLt (bf16 inputs with fp32 output) into one fp32 chunk buffer; a kernel folds
// each row into a running (max, sumexp) per token (online logsumexp) and picks the label's
// logit when its chunk passes. The backward recomputes each chunk's logits, turns them into
// dz in place (f32) or into a bf16 buffer (bf16 inputs), then dh += dz W_chunk (fp32
// accumulator) and dW_chunk += dz^T h with the GEMM. Extra memory: O(T * chunk_size)
// (4 bytes per element for f32, 6 for bf16) plus O(T * H) f32 for dh when bf16, never
// O(T * V). All reductions run in a fixed order (deterministic); no host synchronisation.
// Empty inputs (T = 0) work: loss 0, dh empty, dW unchanged.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::ops {

inline constexpr int64_t kIgnoreIndex = -100;  // Hugging Face's default

enum class CrossEntropyReduction { mean, sum };

struct CrossEntropyOptions {
  int64_t ignore_index = kIgnoreIndex;
  CrossEntropyReduction reduction = CrossEntropyReduction::mean;
  // CUDA: vocabulary rows of W per GEMM chunk (>= 1). The chunk buffer is T * chunk_size
  // floats (plus as many bf16 values in the backward of bf16 inputs); lower it for very
  // long micro-batches. Ignored by the CPU reference.
  int64_t chunk_size = 8192;
  // CUDA, linear_cross_entropy_forward_backward: the most logits (tokens x vocabulary) one
  // token chunk may hold; the buffers take 6 bytes per element for bf16 inputs (fp32 logits +
  // bf16 dz), 4 for f32. The default (2^30) keeps a whole 8192-token micro-batch of a 32k
  // vocabulary in one chunk and splits a 152k vocabulary's in two.
  int64_t fused_chunk_elements = int64_t{1} << 30;
};

// One vocabulary shard's share of the forward, per token (see the top of this file).
struct CrossEntropyPartials {
  Tensor max;          // [T] m_t (-inf for an empty shard)
  Tensor sum_exp;      // [T] s_t, relative to m_t
  Tensor label_logit;  // [T] a_t: z_t,y_t when y_t is in the shard, else 0
};

// The forward's result; the backward needs logsumexp and weight_sum.
struct CrossEntropyResult {
  Tensor loss;          // 0-d: the reduced loss
  Tensor token_losses;  // [T] l_t = lse_t - z_t,y_t (mask not applied); 0 where ignored
  Tensor logsumexp;     // [T] lse_t (computed for every token, ignored ones included)
  Tensor weight_sum;    // 0-d: N = sum_t w_t
};

// The whole forward: partials over the whole vocabulary, then combine.
CrossEntropyResult linear_cross_entropy_forward(const Tensor& hidden, const Tensor& weight,
                                                const Tensor& labels, const Tensor& loss_mask,
                                                const CrossEntropyOptions& options = {});

// Per-token losses l_t [T] for logging and evaluation (0 where the label is ignored).
Tensor linear_cross_entropy_per_token(const Tensor& hidden, const Tensor& weight,
                                      const Tensor& labels,
                                      const CrossEntropyOptions& options = {});

// A shard's partials: weight holds the vocabulary rows [vocab_start, vocab_start + V_r)
// (V_r may be 0); labels are global vocabulary ids.
CrossEntropyPartials linear_cross_entropy_partials(const Tensor& hidden, const Tensor& weight,
                                                   const Tensor& labels, int64_t vocab_start,
                                                   const CrossEntropyOptions& options = {});

// Combines the partials of shards that together cover [0, vocab_size) (at least one shard,
// all on one device, of one dtype) into the loss. vocab_size is the whole vocabulary's size
// (labels are checked against it).
CrossEntropyResult cross_entropy_combine(const std::vector<CrossEntropyPartials>& shards,
                                         const Tensor& labels, const Tensor& loss_mask,
                                         int64_t vocab_size,
                                         const CrossEntropyOptions& options = {});

// Backward of the forward above for the weight rows [vocab_start, vocab_start + V_r) (the whole
// vocabulary: vocab_start = 0, weight [V, H]). Returns dh [T, H] in hidden's dtype (written;
// with vocabulary shards, this shard's share). grad_weight [V_r, H] is accumulated (+=); it may
// be undefined to skip dW. saved: the forward's result (logsumexp and weight_sum are read).
// hidden, weight, labels, loss_mask and options must be the forward's.
Tensor linear_cross_entropy_backward(double grad_loss, const Tensor& hidden, const Tensor& weight,
                                     const Tensor& labels, const Tensor& loss_mask,
                                     const CrossEntropyResult& saved, Tensor& grad_weight,
                                     const CrossEntropyOptions& options = {},
                                     int64_t vocab_start = 0);

// The forward and the backward at once, for training, where the loss's upstream gradient
// grad_loss is known before the forward (the trainer's micro-batch scale): the same results as
// linear_cross_entropy_forward followed by linear_cross_entropy_backward(grad_loss, ...), dW
// accumulated (+=) into grad_weight (may be undefined) and dh returned. On CUDA it walks token
// chunks of the whole vocabulary instead of vocabulary chunks, so each chunk's logits are
// computed once and give lse and dz from the same buffer: one [T, V, H] GEMM fewer than the
// forward + backward pair (which recomputes the logits), at the cost of a [T_chunk, V] buffer
// (options.fused_chunk_elements). On the CPU it is that pair.
struct CrossEntropyWithGrad {
  CrossEntropyResult result;
  Tensor grad_hidden;  // [T, H], hidden's dtype
};
CrossEntropyWithGrad linear_cross_entropy_forward_backward(double grad_loss, const Tensor& hidden,
                                                           const Tensor& weight,
                                                           const Tensor& labels,
                                                           const Tensor& loss_mask,
                                                           Tensor& grad_weight,
                                                           const CrossEntropyOptions& options = {});

}  // namespace moe::ops
