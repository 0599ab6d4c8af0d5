#include "moe/nn/router.h"

#include <cmath>

#include "moe/core/rng.h"
#include "moe/ops/elementwise.h"
#include "moe/ops/gemm.h"
#include "moe/ops/permute.h"

namespace moe::nn {
namespace {

// Seeds of the router's random draws: distinct per purpose, per call and per rank.
constexpr uint64_t kRouterWeightSalt = 0x52'4f'55'54'45'52ULL;  // "ROUTER"
uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t x = a ^ (b + 0x9E3779B97F4A7C15ULL + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ULL;
  return x ^ (x >> 29);
}

void all_reduce_if(const std::shared_ptr<dist::ProcessGroup>& group, Tensor& t) {
  if (group && group->size() > 1) group->all_reduce(t, dist::ReduceOp::sum);
}

}  // namespace

Router::Router(const MoEConfig& config, Device device, MoEGroups groups)
    : config_(config), device_(device), groups_(std::move(groups)) {
  config_.validate();
  const DType rd = config_.router_dtype();
  weight = Parameter::make("router.weight", {config_.num_experts, config_.hidden_size}, rd, device);
  fill_normal(weight.value, mix_seed(config_.seed, kRouterWeightSalt), 0.0,
              config_.init_method_std);
  expert_bias = Tensor::zeros({config_.num_experts}, DType::f32, device);
  step_tokens_per_expert_ = Tensor::zeros({config_.num_experts}, DType::f32, device);
  global_tokens_per_expert_ = Tensor::zeros({config_.num_experts}, rd, device);
}

void Router::forward(const Tensor& x, int64_t num_sequences, RouterContext& ctx) {
  check_dim(x, 2, "Router::forward", "x");
  MOE_CHECK(x.size(1) == config_.hidden_size, "Router::forward: hidden size ", x.size(1),
            " != --hidden-size ", config_.hidden_size);
  const int64_t T = x.size(0), E = config_.num_experts, K = config_.moe_router_topk;
  MOE_CHECK(num_sequences >= 1 && T % num_sequences == 0, "Router::forward: ", T,
            " tokens do not split into ", num_sequences, " sequences");
  const DType rd = config_.router_dtype();
  const LoadBalancingType balancing = config_.load_balancing();
  const bool recompute = ctx.recompute;
  const uint64_t first_jitter_seed = ctx.jitter_seed;
  const Tensor first_aux_counts = ctx.aux_counts;
  ctx = RouterContext{};
  ctx.recompute = recompute;
  ctx.input_dtype = x.dtype();
  ctx.num_sequences = num_sequences;

  Tensor xr = x.to(rd);
  if (config_.moe_input_jitter_eps) {
    ctx.jitter_seed = recompute
                          ? first_jitter_seed
                          : mix_seed(mix_seed(config_.seed, forward_count_),
                                     static_cast<uint64_t>(MoEGroups::rank_of(groups_.tp_dp_cp)));
    xr = ops::input_jitter_forward(xr, *config_.moe_input_jitter_eps, ctx.jitter_seed);
  }
  if (!recompute) ++forward_count_;
  ctx.router_input = xr;
  ctx.logits = ops::matmul(xr, weight.value, false, true);

  if (config_.moe_z_loss_coeff && *config_.moe_z_loss_coeff > 0) {
    // Megatron divides the coefficient by |TP x CP|: the ranks of one sequence each add theirs.
    ctx.z_loss = ops::z_loss_forward(ctx.logits,
                                     *config_.moe_z_loss_coeff / MoEGroups::size_of(groups_.tp_cp));
  }

  const ops::TopKConfig topk = config_.topk_config();
  if (config_.moe_router_force_load_balancing) {
    ctx.routing = ops::forced_balanced_routing_forward(ctx.logits, topk);
  } else if (balancing == LoadBalancingType::sinkhorn) {
    ctx.routing = ops::sinkhorn_routing_forward(ctx.logits, K);
  } else {
    const Tensor bias = config_.moe_router_enable_expert_bias ? expert_bias : Tensor();
    ctx.routing = ops::topk_routing_forward(ctx.logits, bias, topk);
  }
  ctx.tokens_per_expert = ops::tokens_per_expert_histogram(ctx.routing.expert_ids, E);
  if (config_.moe_router_enable_expert_bias && !recompute) {
    ops::add_(step_tokens_per_expert_, ctx.tokens_per_expert.to(DType::f32));
  }

  if (config_.moe_aux_loss_coeff > 0) {
    const double coeff = config_.moe_aux_loss_coeff;
    const ops::ScoreFunction sf = topk.score_function;
    ctx.aux_scores = ops::aux_loss_scores(ctx.logits, sf);
    switch (balancing) {
      case LoadBalancingType::aux_loss:
        ctx.aux_counts = ctx.tokens_per_expert.to(rd);
        all_reduce_if(groups_.tp_cp, ctx.aux_counts);
        ctx.aux_total_tokens = T * MoEGroups::size_of(groups_.tp_cp);
        ctx.aux_loss =
            ops::aux_loss_forward(ctx.aux_scores, ctx.aux_counts, ctx.aux_total_tokens, K, coeff);
        break;
      case LoadBalancingType::seq_aux_loss:
        ctx.aux_counts =
            ops::tokens_per_expert_per_sequence(ctx.routing.expert_ids, E, num_sequences).to(rd);
        all_reduce_if(groups_.tp_cp, ctx.aux_counts);
        ctx.aux_total_tokens = (T / num_sequences) * MoEGroups::size_of(groups_.tp_cp);
        ctx.aux_loss = ops::seq_aux_loss_forward(ctx.aux_scores, ctx.aux_counts, num_sequences,
                                                 ctx.aux_total_tokens, K, coeff);
        break;
      case LoadBalancingType::global_aux_loss: {
        if (recompute) {
          ctx.aux_counts = first_aux_counts;  // the average the first forward used
        } else {
          Tensor counts = ctx.tokens_per_expert.to(rd);
          all_reduce_if(groups_.tp_dp_cp, counts);
          ops::add_(global_tokens_per_expert_, counts);
          ++global_micro_batches_;
          // The running average over the step's micro-batches so far, as Megatron uses.
          ctx.aux_counts = global_tokens_per_expert_.clone();
          ops::scale_(ctx.aux_counts, 1.0 / static_cast<double>(global_micro_batches_));
        }
        ctx.aux_total_tokens = T * MoEGroups::size_of(groups_.tp_dp_cp);
        ctx.aux_loss =
            ops::aux_loss_forward(ctx.aux_scores, ctx.aux_counts, ctx.aux_total_tokens, K, coeff);
        break;
      }
      case LoadBalancingType::sinkhorn:
      case LoadBalancingType::none:
        break;
    }
  }

  ctx.probs = ctx.routing.probs;
  ctx.expert_ids = ctx.routing.expert_ids;
  if (config_.moe_expert_capacity_factor) {
    const int64_t capacity = ops::expert_capacity(T, K, E, *config_.moe_expert_capacity_factor);
    ctx.expert_ids = ops::drop_over_capacity(ctx.expert_ids, ctx.probs, E, capacity,
                                             config_.moe_token_drop_policy);
  }
}

RouterContext RouterContext::outputs() const {
  RouterContext kept;
  kept.probs = probs;
  kept.expert_ids = expert_ids;
  kept.aux_loss = aux_loss;
  kept.z_loss = z_loss;
  kept.tokens_per_expert = tokens_per_expert;
  kept.aux_counts = aux_counts;  // [E] or [B, E]: the global-aux average a recompute reuses
  kept.aux_total_tokens = aux_total_tokens;
  kept.num_sequences = num_sequences;
  kept.jitter_seed = jitter_seed;
  kept.input_dtype = input_dtype;
  kept.recompute = recompute;
  return kept;
}

Tensor Router::backward(const Tensor& d_probs, RouterContext& ctx, double loss_scale) {
  const DType rd = config_.router_dtype();
  const int64_t K = config_.moe_router_topk;
  check_shape(d_probs, ctx.probs.shape(), "Router::backward", "d_probs");
  const Tensor grad_probs = d_probs.to(rd);
  const LoadBalancingType balancing = config_.load_balancing();

  Tensor d_logits;
  if (balancing == LoadBalancingType::sinkhorn && !config_.moe_router_force_load_balancing) {
    d_logits = ops::sinkhorn_routing_backward(grad_probs, ctx.routing, ctx.logits, K);
  } else {
    d_logits =
        ops::topk_routing_backward(grad_probs, ctx.routing, ctx.logits, config_.topk_config());
  }

  if (ctx.aux_loss.defined()) {
    const double coeff = config_.moe_aux_loss_coeff;
    const ops::ScoreFunction sf = config_.topk_config().score_function;
    switch (balancing) {
      case LoadBalancingType::aux_loss:
        ops::aux_loss_backward(loss_scale, ctx.aux_scores, ctx.aux_counts, ctx.aux_total_tokens, K,
                               coeff, ctx.logits, sf, d_logits);
        break;
      case LoadBalancingType::seq_aux_loss:
        ops::seq_aux_loss_backward(loss_scale, ctx.aux_scores, ctx.aux_counts, ctx.num_sequences,
                                   ctx.aux_total_tokens, K, coeff, ctx.logits, sf, d_logits);
        break;
      case LoadBalancingType::global_aux_loss:
        ops::aux_loss_backward(loss_scale * groups_.dp_size, ctx.aux_scores, ctx.aux_counts,
                               ctx.aux_total_tokens, K, coeff, ctx.logits, sf, d_logits);
        break;
      default:
        break;
    }
  }
  if (ctx.z_loss.defined()) {
    ops::z_loss_backward(loss_scale, ctx.logits,
                         *config_.moe_z_loss_coeff / MoEGroups::size_of(groups_.tp_cp), d_logits);
  }

  ops::gemm(d_logits, true, ctx.router_input, false, weight.grad, 1.0f, weight.take_grad_beta());
  Tensor dx = ops::matmul(d_logits, weight.value);
  if (config_.moe_input_jitter_eps)
    dx = ops::input_jitter_backward(dx, *config_.moe_input_jitter_eps, ctx.jitter_seed);
  return dx.to(ctx.input_dtype);
}

void Router::finish_step() {
  if (config_.moe_router_enable_expert_bias) {
    // Once per step, on E values: done on the host (one small copy), off the hot path.
    Tensor counts = step_tokens_per_expert_.clone();
    all_reduce_if(groups_.tp_dp_cp, counts);
    std::vector<float> n = counts.to(DType::f32).to_vector<float>();
    std::vector<float> bias = expert_bias.to_vector<float>();
    double mean = 0;
    for (float v : n) mean += v;
    mean /= static_cast<double>(n.size());
    for (size_t e = 0; e < n.size(); ++e) {
      const double diff = mean - n[e];
      const double sign = diff > 0 ? 1.0 : (diff < 0 ? -1.0 : 0.0);
      bias[e] = static_cast<float>(bias[e] + config_.moe_router_bias_update_rate * sign);
    }
    expert_bias.copy_(Tensor::from_vector<float>(bias, {config_.num_experts}));
  }
  discard_step();
}

void Router::discard_step() {
  if (config_.moe_router_enable_expert_bias) step_tokens_per_expert_.zero_();
  global_tokens_per_expert_.zero_();
  global_micro_batches_ = 0;
}

}  // namespace moe::nn
