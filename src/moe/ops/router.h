// Router ops: from router logits z [T, E] (fp32 or fp64) to the top-k routing (probs [T, K],
// expert ids [T, K]) and the load-balancing losses, each with its backward to the logits.
// Formulas: ../../shared/reference/moe-algorithms.md ("Router"); notation T tokens,
// E experts, K = topk.
//
// Gradient rule: every *_backward here returns or accumulates into d_logits [T, E]
// (`accumulate` adds, as the losses do into the routing gradient); nothing else has state.
// Losses are returned as 0-d tensors on the logits' device, so the hot path never waits
// for the host.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::ops {

enum class ScoreFunction { softmax, sigmoid };

struct TopKConfig {
  int64_t topk = 2;
  ScoreFunction score_function = ScoreFunction::softmax;
  bool pre_softmax = false;      // softmax only: softmax over all E, then top-k, no renorm
  int64_t num_groups = 0;        // group-limited routing: 0 = off
  int64_t group_topk = 0;        // groups kept per token
  double scaling_factor = 1.0;   // probs *= scaling_factor (1.0 = off)
};

// The result of top-k routing, and what its backward needs.
struct TopKRouting {
  Tensor probs;       // [T, K] f32/f64 (logits' dtype): routing weight of each chosen expert
  Tensor expert_ids;  // [T, K] i32: chosen experts, in descending selection score
  Tensor scores;      // [T, E] the score function's output (softmax or sigmoid of z), saved
};

// Top-k routing (moe-algorithms.md "Top-k with score function", "Group-limited top-k"):
//   softmax:             (v, I) = topk(z, k);  p = softmax(v)
//   softmax pre_softmax: s = softmax(z); (p, I) = topk(s, k)
//   sigmoid:             s = sigmoid(z); I = topk(s + b, k) (b: expert_bias, selection only);
//                        p = s[I] / (sum s[I] + 1e-20) if k > 1, else s[I]
//   softmax with expert_bias (a moecore extension, Megatron refuses it): s = softmax(z),
//                        I = topk(s + b, k), p = s[I] / (sum s[I] + 1e-20) (renormalised like
//                        sigmoid, so the bias moves selection only and p stays a distribution)
//   then p *= scaling_factor.
// Group-limited: experts in num_groups contiguous groups; a group's score is the sum of its
// top (k / group_topk) selection scores; the best group_topk groups stay, the others are
// masked to -inf, then top-k. expert_bias may be undefined (no bias).
TopKRouting topk_routing_forward(const Tensor& logits, const Tensor& expert_bias,
                                 const TopKConfig& config);
// d_logits = d(probs)/d(logits)^T grad_probs; the selection (ids) is piecewise constant.
Tensor topk_routing_backward(const Tensor& grad_probs, const TopKRouting& routing,
                             const Tensor& logits, const TopKConfig& config);

// Forced load balancing (`--moe-router-force-load-balancing`, benchmark mode): a
// deterministic, exactly balanced assignment expert_ids[t, j] = (t * K + j) mod E (distinct
// experts per token when K <= E), with probs taken from the scores as the score function
// would (softmax of the chosen logits / normalised sigmoid), and the same backward.
TopKRouting forced_balanced_routing_forward(const Tensor& logits, const TopKConfig& config);

// Tokens routed to each expert: counts[e] = #{(t, j) : expert_ids[t, j] == e}; ids < 0
// (dropped) are skipped. Returns [E] i64 on the ids' device.
Tensor tokens_per_expert_histogram(const Tensor& expert_ids, int64_t num_experts);
// Per sequence (seq_aux_loss): tokens are ordered [S, B] (token t = s * B + b, Megatron's
// layout); returns [B, E] i64.
Tensor tokens_per_expert_per_sequence(const Tensor& expert_ids, int64_t num_experts,
                                      int64_t num_sequences);

// Scores the load-balancing losses use: softmax(z), or sigmoid(z) / sum_e sigmoid(z).
// [T, E] in the logits' dtype.
Tensor aux_loss_scores(const Tensor& logits, ScoreFunction score_function);

// aux_loss: L = coeff * E / (K * T_total^2) * sum_e P_e * c_e, P_e = sum_t s_te over the local
// tokens, c_e = counts[e] (already summed over whatever group the caller reduces over),
// T_total = the token count behind those counts. Perfectly uniform routing gives L = coeff.
// global_aux_loss is the same formula with counts accumulated over the global batch.
Tensor aux_loss_forward(const Tensor& scores, const Tensor& counts, int64_t total_tokens,
                        int64_t topk, double coeff);
// Adds grad_loss * dL/dz to d_logits (grad_loss a host scalar: the loss scale).
void aux_loss_backward(double grad_loss, const Tensor& scores, const Tensor& counts,
                       int64_t total_tokens, int64_t topk, double coeff, const Tensor& logits,
                       ScoreFunction score_function, Tensor& d_logits);

// seq_aux_loss: tokens [S, B]; counts [B, E]; L = (1/B) sum_b coeff * E / (K * S_total^2) *
// sum_e P_be * c_be with P_be = sum_s s_(s,b),e, S_total = seq_len * (ranks splitting it).
Tensor seq_aux_loss_forward(const Tensor& scores, const Tensor& counts, int64_t num_sequences,
                            int64_t total_seq_len, int64_t topk, double coeff);
void seq_aux_loss_backward(double grad_loss, const Tensor& scores, const Tensor& counts,
                           int64_t num_sequences, int64_t total_seq_len, int64_t topk,
                           double coeff, const Tensor& logits, ScoreFunction score_function,
                           Tensor& d_logits);

// z-loss: L = coeff * mean_t (logsumexp_e z_te)^2 over the T local tokens, (the caller
// divides coeff by |TP x CP| as Megatron does). d z_te = coeff * 2 lse_t softmax(z)_te / T.
Tensor z_loss_forward(const Tensor& logits, double coeff);
void z_loss_backward(double grad_loss, const Tensor& logits, double coeff, Tensor& d_logits);

// Sinkhorn balancing of exp(z) (selection only, no gradient):
//   C = exp(z); d0 = 1/(T (C d1 + 1e-8)), d1 = 1/(E (d0^T C + 1e-8)) until mean|delta d1|
//   < tol; returns d1 * C * d0 [T, E], whose top-k are the assignments.
Tensor sinkhorn(const Tensor& logits, double tol = 1e-4, int max_iters = 1000);

// Sinkhorn routing (load balancing type `sinkhorn`, k experts): I = topk(sinkhorn(z), k);
// probs p = sigmoid(z)[I] for k = 1, else softmax(z)[I] (not renormalised), as Megatron does.
TopKRouting sinkhorn_routing_forward(const Tensor& logits, int64_t topk);
Tensor sinkhorn_routing_backward(const Tensor& grad_probs, const TopKRouting& routing,
                                 const Tensor& logits, int64_t topk);

// Input jitter: x * U(1 - eps, 1 + eps), the noise from the counter-based RNG (seed), so the
// backward regenerates it instead of storing it. Same dtype and device as x.
Tensor input_jitter_forward(const Tensor& x, double eps, uint64_t seed);
Tensor input_jitter_backward(const Tensor& grad_out, double eps, uint64_t seed);

}  // namespace moe::ops
