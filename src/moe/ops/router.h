// Router ops: from router logits z [T, E] (fp32 or fp64) to the top-k routing (probs [T, K],
// expert ids [T, K]) and the load-balancing losses, each with its backward to the logits.
// Formulas: docs/algorithms.md ("Router"); notation T tokens,
// E experts, K = topk.
//
// Gradient rule: every *_backward here returns or accumulates into d_logits [T, E]
// (`accumulate` adds, as the losses do into the routing gradient); nothing else has state.
// Losses are returned as 0-d tensors on the logits' device, so the hot path never waits
// for the host.
//
// dtypes: logits f32 or f64 on both devices (the router runs in fp32/fp64, docs/design.md);
// internally every selection value, score and prob is computed in fp64 and rounded once.
// Top-k order: higher selection value first, equal values by LOWER expert index, so the
// selection is unique and the CPU and CUDA pick the same experts (NaN ranks last). Where the
// ranked scores are a strictly increasing function of z (pre-softmax or sigmoid without bias
// or groups), the logits themselves are ranked: the same experts, ties decided exactly.
// Empty inputs (T = 0) give empty outputs and zero losses.
// CUDA limits: K <= 32; the top-k keeps a token's E (+ num_groups) selection values in shared
// memory, 9 bytes each, at most 48 KiB (E <= ~5400, or ~2700 with num_groups = E).
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::ops {

enum class ScoreFunction { softmax, sigmoid };

struct TopKConfig {
  int64_t topk = 2;
  ScoreFunction score_function = ScoreFunction::softmax;
  bool pre_softmax = false;     // softmax only: softmax over all E, then top-k, no renorm
  int64_t num_groups = 0;       // group-limited routing: 0 = off
  int64_t group_topk = 0;       // groups kept per token
  // How many of a group's best selection values add up to its score: 0 = K / group_topk
  // (Megatron; DeepSeek-V3's top-2 when K / group_topk = 2), 1 = the group's best expert
  // (DeepSeek-V2's group_limited_greedy). At most the group size.
  int64_t group_score_size = 0;
  double scaling_factor = 1.0;  // probs *= scaling_factor (1.0 = off)
};

// The result of top-k routing, and what its backward needs.
struct TopKRouting {
  Tensor probs;       // [T, K] f32/f64 (logits' dtype): routing weight of each chosen expert
  Tensor expert_ids;  // [T, K] i32: chosen experts, in descending selection score
  Tensor scores;      // [T, E] the score function's output (softmax or sigmoid of z), saved
  // Whether an expert_bias took part in the selection: softmax routing with a bias
  // renormalises its probs, so the backward must know (set by topk_routing_forward).
  bool used_expert_bias = false;
};

// Top-k routing (docs/algorithms.md "Top-k with score function", "Group-limited top-k"):
//   softmax:             (v, I) = topk(z, k);  p = softmax(v)
//   softmax pre_softmax: s = softmax(z); (p, I) = topk(s, k)
//   sigmoid:             s = sigmoid(z); I = topk(s + b, k) (b: expert_bias, selection only);
//                        p = s[I] / (sum s[I] + 1e-20) if k > 1, else s[I]
//   softmax with expert_bias (a moecore extension, Megatron refuses it): s = softmax(z),
//                        I = topk(s + b, k), p = s[I] / (sum s[I] + 1e-20) (renormalised like
//                        sigmoid, so the bias moves selection only and p stays a distribution)
//   then p *= scaling_factor.
// Group-limited: experts in num_groups contiguous groups; a group's score is the sum of its
// top (group_score_size, default k / group_topk) selection scores; the best group_topk groups stay, the others are
// masked to -inf, then top-k. expert_bias may be undefined (no bias); when defined it is [E],
// f32 or f64 (any of the two, whatever the logits' dtype), on the logits' device.
// Checks: 1 <= K <= E; scaling_factor > 0; pre_softmax only with softmax; groups need
// E % num_groups == 0, 1 <= group_topk <= min(num_groups, K), K / group_topk <= E / num_groups
// and group_topk * E / num_groups >= K. Top-1 softmax without pre_softmax is allowed here
// (probs are then all 1; Megatron rejects it, the Router module's config may too).
// The number of values a group's score sums (TopKConfig::group_score_size resolved).
inline int64_t group_score_size(const TopKConfig& config) {
  return config.group_score_size > 0 ? config.group_score_size : config.topk / config.group_topk;
}

TopKRouting topk_routing_forward(const Tensor& logits, const Tensor& expert_bias,
                                 const TopKConfig& config);
// d_logits [T, E] (written) = d(probs)/d(logits)^T grad_probs, grad_probs [T, K] in the
// logits' dtype; the selection (ids) is piecewise constant, so it has no gradient. Also the
// backward of forced_balanced_routing_forward (same config).
Tensor topk_routing_backward(const Tensor& grad_probs, const TopKRouting& routing,
                             const Tensor& logits, const TopKConfig& config);

// Forced load balancing (`--moe-router-force-load-balancing`, benchmark mode): a
// deterministic, exactly balanced assignment expert_ids[t, j] = (t * K + j) mod E (distinct
// experts per token when K <= E), with probs taken from the scores as the score function
// would (softmax of the chosen logits / normalised sigmoid), and the same backward.
// Groups and bias play no part. Needs K <= E.
TopKRouting forced_balanced_routing_forward(const Tensor& logits, const TopKConfig& config);

// Tokens routed to each expert: counts[e] = #{(t, j) : expert_ids[t, j] == e}; ids < 0
// (dropped) are skipped. expert_ids [T, K] i32. Returns [E] i64 on the ids' device. An id >= E
// is an error on the CPU and skipped on CUDA (checking it there would need a host sync).
Tensor tokens_per_expert_histogram(const Tensor& expert_ids, int64_t num_experts);
// Per sequence (seq_aux_loss): tokens are ordered [S, B] (token t = s * B + b, Megatron's
// layout); T must be a multiple of num_sequences = B; returns [B, E] i64.
Tensor tokens_per_expert_per_sequence(const Tensor& expert_ids, int64_t num_experts,
                                      int64_t num_sequences);

// Scores the load-balancing losses use: softmax(z), or sigmoid(z) / sum_e sigmoid(z).
// [T, E] in the logits' dtype.
Tensor aux_loss_scores(const Tensor& logits, ScoreFunction score_function);

// aux_loss: L = coeff * E / (K * T_total^2) * sum_e P_e * c_e, P_e = sum_t s_te over the local
// tokens, c_e = counts[e] (already summed over whatever group the caller reduces over),
// T_total = the token count behind those counts. Perfectly uniform routing gives L = coeff.
// global_aux_loss is the same formula with counts accumulated over the global batch.
// scores [T, E] f32/f64; counts [E] i64, i32, f32 or f64 (averaged counts may be fractional);
// the loss is a 0-d tensor in the scores' dtype (summed in fp64, a fixed-order tree on CUDA).
// total_tokens must be > 0 unless T = 0.
Tensor aux_loss_forward(const Tensor& scores, const Tensor& counts, int64_t total_tokens,
                        int64_t topk, double coeff);
// Adds grad_loss * dL/dz to d_logits [T, E] (accumulated; grad_loss a host scalar: the loss
// scale). `scores` must be aux_loss_scores(logits, score_function).
void aux_loss_backward(double grad_loss, const Tensor& scores, const Tensor& counts,
                       int64_t total_tokens, int64_t topk, double coeff, const Tensor& logits,
                       ScoreFunction score_function, Tensor& d_logits);

// seq_aux_loss: tokens [S, B]; counts [B, E]; L = (1/B) sum_b coeff * E / (K * S_total^2) *
// sum_e P_be * c_be with P_be = sum_s s_(s,b),e, S_total = seq_len * (ranks splitting it).
Tensor seq_aux_loss_forward(const Tensor& scores, const Tensor& counts, int64_t num_sequences,
                            int64_t total_seq_len, int64_t topk, double coeff);
void seq_aux_loss_backward(double grad_loss, const Tensor& scores, const Tensor& counts,
                           int64_t num_sequences, int64_t total_seq_len, int64_t topk, double coeff,
                           const Tensor& logits, ScoreFunction score_function, Tensor& d_logits);

// z-loss: L = coeff * mean_t (logsumexp_e z_te)^2 over the T local tokens, (the caller
// divides coeff by |TP x CP| as Megatron does). d z_te = coeff * 2 lse_t softmax(z)_te / T,
// times grad_loss, added to d_logits. L = 0 when T = 0.
Tensor z_loss_forward(const Tensor& logits, double coeff);
void z_loss_backward(double grad_loss, const Tensor& logits, double coeff, Tensor& d_logits);

// Sinkhorn balancing of exp(z) (selection only, no gradient):
//   C = exp(z); d0 = 1/(T (C d1 + 1e-8)), d1 = 1/(E (d0^T C + 1e-8)) until mean|delta d1|
//   < tol (or max_iters); returns d1 * C * d0 [T, E], whose top-k are the assignments.
// d0 [T], d1 [E] start at 1 and are iterated in fp64 on both devices (no rescaling of exp(z),
// as in Megatron: logits must stay below ~700). On CUDA the iteration runs in one thread
// block, without host synchronisation (sinkhorn is a legacy option; speed is secondary);
// it keeps d1 in shared memory, so E <= 5000 there.
Tensor sinkhorn(const Tensor& logits, double tol = 1e-4, int max_iters = 1000);

// Sinkhorn routing (load balancing type `sinkhorn`, k experts): I = topk(sinkhorn(z), k);
// probs p = sigmoid(z)[I] for k = 1, else softmax(z)[I] (not renormalised), as Megatron does.
// routing.scores holds sigmoid(z) or softmax(z) [T, E]. The backward writes d_logits.
TopKRouting sinkhorn_routing_forward(const Tensor& logits, int64_t topk);
Tensor sinkhorn_routing_backward(const Tensor& grad_probs, const TopKRouting& routing,
                                 const Tensor& logits, int64_t topk);

// Input jitter: x * U(1 - eps, 1 + eps), the noise from the counter-based RNG (seed), so the
// backward regenerates it instead of storing it. Same dtype and device as x.
// noise[i] = philox_uniform(seed, i, 1 - eps, 1 + eps) (fp32) with i the flat element index,
// so CPU and CUDA give bit-identical results; y = x * noise in fp32 (fp64 for f64 x).
// dtypes: f64, f32, bf16, f16 (CUDA: f64, f32, bf16, f16). 0 <= eps < 1.
// The backward writes grad_x = grad_out * noise.
Tensor input_jitter_forward(const Tensor& x, double eps, uint64_t seed);
Tensor input_jitter_backward(const Tensor& grad_out, double eps, uint64_t seed);

}  // namespace moe::ops
