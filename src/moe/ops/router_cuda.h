// Internal: the CUDA launchers of the router ops (router_cuda.cu, router_losses_cuda.cu,
// router_sinkhorn_cuda.cu). Plain C++, so the CPU entry points can call them; arguments are
// already checked there. Not part of the public API.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"
#include "moe/ops/router.h"
#include "moe/ops/router_rules.h"

namespace moe::ops::detail {

// One routing pass: scores, selection per `rule`, probs. bias64 [E] f64 or undefined;
// sinkhorn_d0 [T] / sinkhorn_d1 [E] f64 for SelectKind::sinkhorn, undefined otherwise.
// Fills routing.probs / expert_ids / scores (allocated by the caller).
void route_cuda(const Tensor& logits, int64_t topk, const RoutingRule& rule, const Tensor& bias64,
                const Tensor& sinkhorn_d0, const Tensor& sinkhorn_d1, TopKRouting& routing);
// d_logits (written) of the routing pass with `rule`.
void route_backward_cuda(const Tensor& grad_probs, const TopKRouting& routing, const Tensor& logits,
                         const RoutingRule& rule, Tensor& d_logits);

// counts [B, E] i64 (zeroed by the caller): counts[(t mod B), e] += #{j : ids[t, j] == e}.
void histogram_cuda(const Tensor& expert_ids, int64_t num_experts, int64_t num_sequences,
                    Tensor& counts);

void aux_loss_scores_cuda(const Tensor& logits, ScoreKind kind, Tensor& scores);
// loss (0-d, scores' dtype) = scale * sum_t sum_e scores[t, e] * counts[t mod B, e].
void weighted_score_sum_cuda(const Tensor& scores, const Tensor& counts, int64_t num_sequences,
                             double scale, Tensor& loss);
// d_logits[t] += dS/dz for dL/ds[t, e] = scale * counts[t mod B, e], through `kind`.
void weighted_score_sum_backward_cuda(double scale, const Tensor& scores, const Tensor& counts,
                                      int64_t num_sequences, const Tensor& logits, ScoreKind kind,
                                      Tensor& d_logits);
// loss (0-d) = scale * sum_t lse_t^2;  backward: d_logits += scale * 2 lse_t softmax(z_t).
void z_loss_cuda(const Tensor& logits, double scale, Tensor& loss);
void z_loss_backward_cuda(double scale, const Tensor& logits, Tensor& d_logits);

// Sinkhorn scaling vectors d0 [T], d1 [E] (f64, allocated by the caller).
void sinkhorn_scaling_cuda(const Tensor& logits, double tol, int max_iters, Tensor& d0, Tensor& d1);
// out [T, E] (logits' dtype) = d1_e * exp(z_te) * d0_t.
void sinkhorn_apply_cuda(const Tensor& logits, const Tensor& d0, const Tensor& d1, Tensor& out);

// y = x * noise (forward) or grad_x = grad_out * noise (backward): the same operation.
void jitter_cuda(const Tensor& x, double eps, uint64_t seed, Tensor& out);

}  // namespace moe::ops::detail
