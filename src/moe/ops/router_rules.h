// Internal to the router ops: each routing variant of router.h reduced to three choices (what
// the scores are, what top-k ranks, how probs come from the chosen experts), shared by the
// CPU reference and the CUDA kernels so that both take the same decisions, plus the ranking
// order both use. Not part of the public API.
//
// Precision: whatever the logits' dtype, selection values, scores and probs are computed in
// fp64 and rounded once on output. The ranking therefore agrees between CPU and CUDA unless
// two candidates are within ~1e-16 of each other (exact ties are broken by index on both).
#pragma once

#include <cmath>
#include <cstdint>

#include "moe/core/host_device.h"
#include "moe/ops/router.h"

namespace moe::ops::detail {

// scores [T, E]: softmax over the E logits of a token, or the element-wise sigmoid.
enum class ScoreKind : int { softmax, sigmoid };

// What top-k ranks. Ranking logits instead of softmax/sigmoid scores selects the same experts
// (both are strictly increasing in z) with ties decided by the exact logits; group scores sum
// selection values, so group-limited routing ranks the scores themselves.
enum class SelectKind : int {
  logits,            // z
  scores,            // s
  scores_plus_bias,  // s + b (b: expert_bias, selection only)
  sinkhorn,          // d1_e * exp(z_te) * d0_t (selection only)
  forced,            // expert (t * K + j) mod E, no ranking
};

// probs [T, K] from the chosen experts I (before the scaling factor):
enum class ProbRule : int {
  softmax_of_chosen,  // p = softmax(z[I])
  gather,             // p = s[I]
  gather_renorm,      // p = s[I] / (sum s[I] + 1e-20)
};

inline constexpr double kRenormEps = 1e-20;

struct RoutingRule {
  ScoreKind score = ScoreKind::softmax;
  SelectKind select = SelectKind::logits;
  ProbRule prob = ProbRule::softmax_of_chosen;
  double scaling = 1.0;
  int64_t num_groups = 0;  // 0: no group-limited routing
  int64_t group_topk = 0;
  int64_t group_score_size = 0;  // values summed per group score (resolved, > 0 with groups)
};

inline RoutingRule topk_rule(const TopKConfig& config, bool has_bias) {
  RoutingRule r;
  r.scaling = config.scaling_factor;
  r.num_groups = config.num_groups;
  r.group_topk = config.group_topk;
  r.group_score_size = config.num_groups > 0 ? group_score_size(config) : 0;
  const bool groups = config.num_groups > 0;
  if (config.score_function == ScoreFunction::softmax) {
    r.score = ScoreKind::softmax;
    if (has_bias) {
      r.select = SelectKind::scores_plus_bias;
      r.prob = ProbRule::gather_renorm;
    } else if (config.pre_softmax) {
      r.select = groups ? SelectKind::scores : SelectKind::logits;
      r.prob = ProbRule::gather;
    } else {
      r.select = SelectKind::logits;
      r.prob = ProbRule::softmax_of_chosen;
    }
  } else {
    r.score = ScoreKind::sigmoid;
    r.select = has_bias ? SelectKind::scores_plus_bias
                        : (groups ? SelectKind::scores : SelectKind::logits);
    r.prob = config.topk > 1 ? ProbRule::gather_renorm : ProbRule::gather;
  }
  return r;
}

// Forced balancing: the probs of the score function (without bias), ids fixed, no groups.
inline RoutingRule forced_rule(const TopKConfig& config) {
  RoutingRule r = topk_rule(config, /*has_bias=*/false);
  r.select = SelectKind::forced;
  r.num_groups = 0;
  r.group_topk = 0;
  return r;
}

// Sinkhorn routing: sigmoid(z)[I] for k = 1, softmax(z)[I] otherwise (Megatron).
inline RoutingRule sinkhorn_rule(int64_t topk) {
  RoutingRule r;
  r.score = topk == 1 ? ScoreKind::sigmoid : ScoreKind::softmax;
  r.select = SelectKind::sinkhorn;
  r.prob = ProbRule::gather;
  return r;
}

// The ranking order of top-k (and of group selection): higher value first; equal values by
// lower index; NaN ranks below every number. A strict total order, so "the k best" is unique
// and the CPU and the CUDA warp reductions agree. index < 0 means "no candidate".
MOE_HD bool ranks_before(double value_a, int64_t index_a, double value_b, int64_t index_b) {
  if (index_a < 0) return false;
  if (index_b < 0) return true;
  const bool nan_a = value_a != value_a, nan_b = value_b != value_b;
  if (nan_a || nan_b) return nan_a == nan_b ? index_a < index_b : nan_b;
  return value_a > value_b || (value_a == value_b && index_a < index_b);
}

MOE_HD double sigmoid_f64(double z) {
  return 1.0 / (1.0 + exp(-z));
}

// The forced balanced assignment (distinct experts per token when K <= E).
MOE_HD int64_t forced_expert(int64_t token, int64_t choice, int64_t topk, int64_t num_experts) {
  return (token * topk + choice) % num_experts;
}

}  // namespace moe::ops::detail

namespace moe::ops::detail {

// Shared entry-point checks (router_cpu.cpp): logits [T, E] f32/f64 with E >= 1.
void check_router_logits(const Tensor& logits, const char* op);

// One routing pass on the logits' device: allocates probs [T, K], expert_ids [T, K] i32 and
// scores [T, E] and fills them per `rule`. bias64: [E] f64 or undefined; sinkhorn_d0 [T] and
// sinkhorn_d1 [E] f64 for SelectKind::sinkhorn, else undefined.
TopKRouting run_routing(const Tensor& logits, int64_t topk, const RoutingRule& rule,
                        const Tensor& bias64, const Tensor& sinkhorn_d0, const Tensor& sinkhorn_d1);
// d_logits [T, E] (a new tensor) of a routing pass made with `rule`.
Tensor run_routing_backward(const Tensor& grad_probs, const TopKRouting& routing,
                            const Tensor& logits, const RoutingRule& rule, const char* op);

}  // namespace moe::ops::detail
