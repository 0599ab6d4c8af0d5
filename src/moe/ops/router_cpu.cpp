// Top-k routing (router.h): the public entry points of top-k and forced balanced routing
// (checks, then device dispatch), and the CPU reference of one routing pass and its backward,
// which sinkhorn routing shares (router_sinkhorn_cpu.cpp).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "moe/ops/router.h"
#include "moe/ops/router_cuda.h"
#include "moe/ops/router_rules.h"

namespace moe::ops {
namespace detail {

void check_router_logits(const Tensor& logits, const char* op) {
  check_defined(logits, op, "logits");
  check_dim(logits, 2, op, "logits");
  MOE_CHECK(logits.dtype() == DType::f32 || logits.dtype() == DType::f64, op,
            ": logits must be f32 or f64 (the router runs in fp32/fp64), got ", logits.dtype());
  MOE_CHECK(logits.size(1) >= 1, op, ": logits ", shape_str(logits.shape()), " have no experts");
}

namespace {

// ---- CPU reference of one routing pass -------------------------------------------------

template <class T>
void route_rows_cpu(const Tensor& logits, int64_t topk, const RoutingRule& rule, const double* bias,
                    const double* d0, const double* d1, TopKRouting& out) {
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  const T* z_all = logits.data<T>();
  T* probs = out.probs.data<T>();
  int32_t* ids = out.expert_ids.data<int32_t>();
  T* scores = out.scores.data<T>();

  const int64_t num_groups = rule.num_groups;
  const int64_t group_size = num_groups > 0 ? num_experts / num_groups : 0;
  const int64_t per_group = rule.group_score_size;

  std::vector<double> s(num_experts), sel(num_experts), group_score(num_groups), q(topk);
  std::vector<int64_t> candidates, group_members(group_size), groups(num_groups), chosen(topk);
  auto expert_before = [&](int64_t a, int64_t b) { return ranks_before(sel[a], a, sel[b], b); };
  auto group_before = [&](int64_t a, int64_t b) {
    return ranks_before(group_score[a], a, group_score[b], b);
  };

  for (int64_t t = 0; t < num_tokens; ++t) {
    const T* z = z_all + t * num_experts;
    if (rule.score == ScoreKind::softmax) {
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t e = 0; e < num_experts; ++e) m = std::max(m, static_cast<double>(z[e]));
      double sum = 0;
      for (int64_t e = 0; e < num_experts; ++e) sum += std::exp(static_cast<double>(z[e]) - m);
      for (int64_t e = 0; e < num_experts; ++e)
        s[e] = std::exp(static_cast<double>(z[e]) - m) / sum;
    } else {
      for (int64_t e = 0; e < num_experts; ++e) s[e] = sigmoid_f64(static_cast<double>(z[e]));
    }
    for (int64_t e = 0; e < num_experts; ++e) scores[t * num_experts + e] = static_cast<T>(s[e]);

    if (rule.select == SelectKind::forced) {
      for (int64_t j = 0; j < topk; ++j) chosen[j] = forced_expert(t, j, topk, num_experts);
    } else {
      for (int64_t e = 0; e < num_experts; ++e) {
        switch (rule.select) {
          case SelectKind::logits:
            sel[e] = static_cast<double>(z[e]);
            break;
          case SelectKind::scores:
            sel[e] = s[e];
            break;
          case SelectKind::scores_plus_bias:
            sel[e] = s[e] + bias[e];
            break;
          case SelectKind::sinkhorn:
            sel[e] = d1[e] * std::exp(static_cast<double>(z[e])) * d0[t];
            break;
          case SelectKind::forced:
            break;
        }
      }
      candidates.clear();
      if (num_groups > 0) {
        // A group's score: the sum of its top group_score_size selection values, added in
        // ranking order (the CUDA kernel adds them in the same order).
        for (int64_t g = 0; g < num_groups; ++g) {
          std::iota(group_members.begin(), group_members.end(), g * group_size);
          std::partial_sort(group_members.begin(), group_members.begin() + per_group,
                            group_members.end(), expert_before);
          double sum = 0;
          for (int64_t i = 0; i < per_group; ++i) sum += sel[group_members[i]];
          group_score[g] = sum;
        }
        std::iota(groups.begin(), groups.end(), 0);
        std::partial_sort(groups.begin(), groups.begin() + rule.group_topk, groups.end(),
                          group_before);
        for (int64_t i = 0; i < rule.group_topk; ++i)
          for (int64_t e = 0; e < group_size; ++e) candidates.push_back(groups[i] * group_size + e);
      } else {
        candidates.resize(num_experts);
        std::iota(candidates.begin(), candidates.end(), 0);
      }
      std::partial_sort(candidates.begin(), candidates.begin() + topk, candidates.end(),
                        expert_before);
      std::copy(candidates.begin(), candidates.begin() + topk, chosen.begin());
    }

    switch (rule.prob) {
      case ProbRule::softmax_of_chosen: {
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < topk; ++j) m = std::max(m, static_cast<double>(z[chosen[j]]));
        double sum = 0;
        for (int64_t j = 0; j < topk; ++j) {
          q[j] = std::exp(static_cast<double>(z[chosen[j]]) - m);
          sum += q[j];
        }
        for (int64_t j = 0; j < topk; ++j) q[j] /= sum;
        break;
      }
      case ProbRule::gather:
        for (int64_t j = 0; j < topk; ++j) q[j] = s[chosen[j]];
        break;
      case ProbRule::gather_renorm: {
        double sum = 0;
        for (int64_t j = 0; j < topk; ++j) sum += s[chosen[j]];
        for (int64_t j = 0; j < topk; ++j) q[j] = s[chosen[j]] / (sum + kRenormEps);
        break;
      }
    }
    for (int64_t j = 0; j < topk; ++j) {
      probs[t * topk + j] = static_cast<T>(q[j] * rule.scaling);
      ids[t * topk + j] = static_cast<int32_t>(chosen[j]);
    }
  }
}

// ---- CPU reference of the backward -------------------------------------------------------
// Let g = scaling * grad_probs. Rules (per token, I the chosen experts, distinct):
//   softmax_of_chosen: p = softmax(z[I]);       dz[I_j] = p_j (g_j - sum_i p_i g_i)
//   gather:            q = s[I];                dq_j = g_j
//   gather_renorm:     p = q / (Q + eps), Q = sum q;
//                      dq_j = g_j / (Q + eps) - sum_i g_i q_i / (Q + eps)^2
// then through the score function: sigmoid dz[I_j] = dq_j q_j (1 - q_j);
//   softmax (ds sparse on I): dz_e = s_e (ds_e - sum_j q_j dq_j).
template <class T>
void route_backward_rows_cpu(const Tensor& grad_probs, const TopKRouting& routing,
                             const Tensor& logits, const RoutingRule& rule, Tensor& d_logits) {
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  const int64_t topk = grad_probs.size(1);
  const T* grad = grad_probs.data<T>();
  const int32_t* ids = routing.expert_ids.data<int32_t>();
  const T* z_all = logits.data<T>();
  const T* scores = rule.prob == ProbRule::softmax_of_chosen ? nullptr : routing.scores.data<T>();
  T* d_all = d_logits.data<T>();
  std::vector<double> g(topk), q(topk), dq(topk);

  for (int64_t t = 0; t < num_tokens; ++t) {
    T* d = d_all + t * num_experts;
    const int32_t* id = ids + t * topk;
    for (int64_t j = 0; j < topk; ++j)
      g[j] = rule.scaling * static_cast<double>(grad[t * topk + j]);
    if (rule.prob == ProbRule::softmax_of_chosen) {
      const T* z = z_all + t * num_experts;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < topk; ++j) m = std::max(m, static_cast<double>(z[id[j]]));
      double sum = 0;
      for (int64_t j = 0; j < topk; ++j) {
        q[j] = std::exp(static_cast<double>(z[id[j]]) - m);
        sum += q[j];
      }
      double dot = 0;
      for (int64_t j = 0; j < topk; ++j) {
        q[j] /= sum;
        dot += q[j] * g[j];
      }
      std::fill(d, d + num_experts, T(0));
      for (int64_t j = 0; j < topk; ++j) d[id[j]] = static_cast<T>(q[j] * (g[j] - dot));
      continue;
    }
    const T* s = scores + t * num_experts;
    for (int64_t j = 0; j < topk; ++j) q[j] = static_cast<double>(s[id[j]]);
    if (rule.prob == ProbRule::gather) {
      for (int64_t j = 0; j < topk; ++j) dq[j] = g[j];
    } else {
      double sum = 0, dot = 0;
      for (int64_t j = 0; j < topk; ++j) sum += q[j];
      const double denom = sum + kRenormEps;
      for (int64_t j = 0; j < topk; ++j) dot += g[j] * q[j];
      for (int64_t j = 0; j < topk; ++j) dq[j] = g[j] / denom - dot / (denom * denom);
    }
    if (rule.score == ScoreKind::sigmoid) {
      std::fill(d, d + num_experts, T(0));
      for (int64_t j = 0; j < topk; ++j) d[id[j]] = static_cast<T>(dq[j] * q[j] * (1 - q[j]));
    } else {
      double dot = 0;
      for (int64_t j = 0; j < topk; ++j) dot += q[j] * dq[j];
      for (int64_t e = 0; e < num_experts; ++e)
        d[e] = static_cast<T>(-static_cast<double>(s[e]) * dot);
      for (int64_t j = 0; j < topk; ++j) d[id[j]] = static_cast<T>(q[j] * (dq[j] - dot));
    }
  }
}

void check_topk_config(const TopKConfig& config, int64_t num_experts, const char* op) {
  MOE_CHECK(config.topk >= 1 && config.topk <= num_experts, op, ": topk = ", config.topk,
            " must be in [1, E = ", num_experts, "]");
  MOE_CHECK(config.scaling_factor > 0 && std::isfinite(config.scaling_factor), op,
            ": scaling_factor must be positive and finite, got ", config.scaling_factor);
  MOE_CHECK(!config.pre_softmax || config.score_function == ScoreFunction::softmax, op,
            ": pre_softmax applies to the softmax score function only");
  MOE_CHECK(config.num_groups >= 0 && config.group_topk >= 0, op,
            ": num_groups and group_topk must be >= 0");
  if (config.num_groups == 0) {
    MOE_CHECK(config.group_topk == 0, op, ": group_topk = ", config.group_topk,
              " needs num_groups > 0");
    return;
  }
  MOE_CHECK(num_experts % config.num_groups == 0, op, ": E = ", num_experts,
            " is not divisible by num_groups = ", config.num_groups);
  const int64_t group_size = num_experts / config.num_groups;
  MOE_CHECK(config.group_topk >= 1 && config.group_topk <= config.num_groups &&
                config.group_topk <= config.topk,
            op, ": group_topk = ", config.group_topk,
            " must be in [1, min(num_groups = ", config.num_groups, ", topk = ", config.topk, ")]");
  MOE_CHECK(config.topk / config.group_topk <= group_size, op,
            ": topk / group_topk = ", config.topk / config.group_topk, " exceeds the group size ",
            group_size);
  MOE_CHECK(config.group_topk * group_size >= config.topk, op, ": the ", config.group_topk,
            " kept groups of ", group_size, " experts cannot hold topk = ", config.topk);
  MOE_CHECK(config.group_score_size >= 0 && config.group_score_size <= group_size, op,
            ": group_score_size = ", config.group_score_size, " must be in [0, group size ",
            group_size, "]");
}

}  // namespace

TopKRouting run_routing(const Tensor& logits, int64_t topk, const RoutingRule& rule,
                        const Tensor& bias64, const Tensor& sinkhorn_d0,
                        const Tensor& sinkhorn_d1) {
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  TopKRouting routing;
  routing.probs = Tensor::empty({num_tokens, topk}, logits.dtype(), logits.device());
  routing.expert_ids = Tensor::empty({num_tokens, topk}, DType::i32, logits.device());
  routing.scores = Tensor::empty({num_tokens, num_experts}, logits.dtype(), logits.device());
  if (logits.is_cuda()) {
    MOE_CUDA_ONLY(route_cuda(logits, topk, rule, bias64, sinkhorn_d0, sinkhorn_d1, routing);
                  return routing;)
  }
  const double* bias = bias64.defined() ? bias64.data<double>() : nullptr;
  const double* d0 = sinkhorn_d0.defined() ? sinkhorn_d0.data<double>() : nullptr;
  const double* d1 = sinkhorn_d1.defined() ? sinkhorn_d1.data<double>() : nullptr;
  dispatch<DType::f64, DType::f32>(logits.dtype(), "routing", [&]<class T>() {
    route_rows_cpu<T>(logits, topk, rule, bias, d0, d1, routing);
  });
  return routing;
}

Tensor run_routing_backward(const Tensor& grad_probs, const TopKRouting& routing,
                            const Tensor& logits, const RoutingRule& rule, const char* op) {
  check_router_logits(logits, op);
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  check_defined(grad_probs, op, "grad_probs");
  check_dim(grad_probs, 2, op, "grad_probs");
  const int64_t topk = grad_probs.size(1);
  check_shape(grad_probs, {num_tokens, topk}, op, "grad_probs");
  check_dtype(grad_probs, logits.dtype(), op, "grad_probs");
  check_same_device(grad_probs, logits, op);
  check_defined(routing.expert_ids, op, "routing.expert_ids");
  check_shape(routing.expert_ids, {num_tokens, topk}, op, "routing.expert_ids");
  check_dtype(routing.expert_ids, DType::i32, op, "routing.expert_ids");
  check_same_device(routing.expert_ids, logits, op);
  if (rule.prob != ProbRule::softmax_of_chosen) {
    check_defined(routing.scores, op, "routing.scores");
    check_shape(routing.scores, {num_tokens, num_experts}, op, "routing.scores");
    check_dtype(routing.scores, logits.dtype(), op, "routing.scores");
    check_same_device(routing.scores, logits, op);
  }
  Tensor d_logits = Tensor::empty({num_tokens, num_experts}, logits.dtype(), logits.device());
  if (logits.is_cuda()) {
    MOE_CUDA_ONLY(route_backward_cuda(grad_probs, routing, logits, rule, d_logits);
                  return d_logits;)
  }
  // The ids index rows of d_logits: check them here (the CUDA kernel trusts the forward).
  const int32_t* ids = routing.expert_ids.data<int32_t>();
  for (int64_t i = 0; i < num_tokens * topk; ++i)
    MOE_CHECK(ids[i] >= 0 && ids[i] < num_experts, op, ": expert id ", ids[i], " out of range [0, ",
              num_experts, ")");
  dispatch<DType::f64, DType::f32>(logits.dtype(), op, [&]<class T>() {
    route_backward_rows_cpu<T>(grad_probs, routing, logits, rule, d_logits);
  });
  return d_logits;
}

}  // namespace detail

// ---- public entry points -----------------------------------------------------------------

TopKRouting topk_routing_forward(const Tensor& logits, const Tensor& expert_bias,
                                 const TopKConfig& config) {
  constexpr const char* op = "topk_routing_forward";
  detail::check_router_logits(logits, op);
  const int64_t num_experts = logits.size(1);
  detail::check_topk_config(config, num_experts, op);
  Tensor bias64;
  if (expert_bias.defined()) {
    check_dim(expert_bias, 1, op, "expert_bias");
    check_shape(expert_bias, {num_experts}, op, "expert_bias");
    MOE_CHECK(expert_bias.dtype() == DType::f32 || expert_bias.dtype() == DType::f64, op,
              ": expert_bias must be f32 or f64, got ", expert_bias.dtype());
    check_same_device(expert_bias, logits, op);
    bias64 = expert_bias.dtype() == DType::f64 ? expert_bias : expert_bias.to(DType::f64);
  }
  const detail::RoutingRule rule = detail::topk_rule(config, expert_bias.defined());
  TopKRouting routing = detail::run_routing(logits, config.topk, rule, bias64, {}, {});
  routing.used_expert_bias = expert_bias.defined();
  return routing;
}

Tensor topk_routing_backward(const Tensor& grad_probs, const TopKRouting& routing,
                             const Tensor& logits, const TopKConfig& config) {
  constexpr const char* op = "topk_routing_backward";
  detail::check_router_logits(logits, op);
  detail::check_topk_config(config, logits.size(1), op);
  check_defined(grad_probs, op, "grad_probs");
  check_dim(grad_probs, 2, op, "grad_probs");
  MOE_CHECK(grad_probs.size(1) == config.topk, op, ": grad_probs ", shape_str(grad_probs.shape()),
            " has not topk = ", config.topk, " columns");
  const detail::RoutingRule rule = detail::topk_rule(config, routing.used_expert_bias);
  return detail::run_routing_backward(grad_probs, routing, logits, rule, op);
}

TopKRouting forced_balanced_routing_forward(const Tensor& logits, const TopKConfig& config) {
  constexpr const char* op = "forced_balanced_routing_forward";
  detail::check_router_logits(logits, op);
  TopKConfig plain = config;  // groups play no part in the forced assignment
  plain.num_groups = 0;
  plain.group_topk = 0;
  detail::check_topk_config(plain, logits.size(1), op);
  return detail::run_routing(logits, config.topk, detail::forced_rule(config), {}, {}, {});
}

}  // namespace moe::ops
