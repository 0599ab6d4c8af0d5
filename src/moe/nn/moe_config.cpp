#include "moe/nn/moe_config.h"

#include <cmath>

#include "moe/core/error.h"
#include "moe/nn/config_limits.h"

namespace moe::nn {

LoadBalancingType parse_load_balancing_type(const std::string& t) {
  for (LoadBalancingType type :
       {LoadBalancingType::aux_loss, LoadBalancingType::seq_aux_loss,
        LoadBalancingType::global_aux_loss, LoadBalancingType::sinkhorn, LoadBalancingType::none})
    if (t == name(type)) return type;
  MOE_FAIL("--moe-router-load-balancing-type ", t,
           " is not one of aux_loss, seq_aux_loss, global_aux_loss, sinkhorn, none");
}

ops::ScoreFunction parse_score_function(const std::string& f) {
  if (f == "softmax") return ops::ScoreFunction::softmax;
  if (f == "sigmoid") return ops::ScoreFunction::sigmoid;
  MOE_FAIL("--moe-router-score-function ", f, " is not one of softmax, sigmoid");
}

DispatcherType parse_dispatcher_type(const std::string& t) {
  if (t == "allgather") return DispatcherType::allgather;
  if (t == "alltoall") return DispatcherType::alltoall;
  if (t == "flex")
    MOE_FAIL("--moe-token-dispatcher-type flex is not supported by this build; use alltoall");
  MOE_FAIL("--moe-token-dispatcher-type ", t, " is not one of allgather, alltoall");
}

RouterDType parse_router_dtype(const std::string& d) {
  if (d == "fp32") return RouterDType::fp32;
  if (d == "fp64") return RouterDType::fp64;
  MOE_FAIL("--moe-router-dtype ", d, " is not one of fp32, fp64");
}

const char* name(LoadBalancingType type) {
  switch (type) {
    case LoadBalancingType::aux_loss:
      return "aux_loss";
    case LoadBalancingType::seq_aux_loss:
      return "seq_aux_loss";
    case LoadBalancingType::global_aux_loss:
      return "global_aux_loss";
    case LoadBalancingType::sinkhorn:
      return "sinkhorn";
    case LoadBalancingType::none:
      return "none";
  }
  MOE_FAIL("unknown LoadBalancingType ", static_cast<int>(type));
}

const char* name(ops::ScoreFunction function) {
  switch (function) {
    case ops::ScoreFunction::softmax:
      return "softmax";
    case ops::ScoreFunction::sigmoid:
      return "sigmoid";
  }
  MOE_FAIL("unknown ScoreFunction ", static_cast<int>(function));
}

const char* name(DispatcherType type) {
  switch (type) {
    case DispatcherType::allgather:
      return "allgather";
    case DispatcherType::alltoall:
      return "alltoall";
  }
  MOE_FAIL("unknown DispatcherType ", static_cast<int>(type));
}

const char* name(RouterDType dtype) {
  switch (dtype) {
    case RouterDType::fp32:
      return "fp32";
    case RouterDType::fp64:
      return "fp64";
  }
  MOE_FAIL("unknown RouterDType ", static_cast<int>(dtype));
}

ops::DropPolicy parse_drop_policy(const std::string& p) {
  if (p == "probs") return ops::DropPolicy::probs;
  if (p == "position") return ops::DropPolicy::position;
  MOE_FAIL("--moe-token-drop-policy ", p, " is not one of probs, position");
}

const char* name(ops::DropPolicy policy) {
  switch (policy) {
    case ops::DropPolicy::probs:
      return "probs";
    case ops::DropPolicy::position:
      return "position";
  }
  MOE_FAIL("unknown DropPolicy ", static_cast<int>(policy));
}

const char* name(ops::GroupedGemmBackend backend) {
  return ops::grouped_gemm_backend_name(backend);
}

ops::TopKConfig MoEConfig::topk_config() const {
  ops::TopKConfig c;
  c.topk = moe_router_topk;
  c.score_function = moe_router_score_function;
  c.pre_softmax = moe_router_pre_softmax;
  c.num_groups = moe_router_num_groups;
  c.group_topk = moe_router_group_topk;
  c.group_score_size = moe_router_group_score_topk;
  c.scaling_factor = moe_router_topk_scaling_factor.value_or(1.0);
  return c;
}

void MoEConfig::validate_sizes() const {
  check_size("--hidden-size", hidden_size, 0, kWidthLimit);
  check_size("--num-experts", num_experts, 0, kCountLimit);
  check_size("--moe-ffn-hidden-size", moe_ffn_hidden_size, 0, kWidthLimit);
  check_size("--moe-shared-expert-intermediate-size", moe_shared_expert_intermediate_size, 0,
             kWidthLimit);
  check_size("--moe-router-topk", moe_router_topk, 0, kCountLimit);
  check_size("--moe-router-num-groups", moe_router_num_groups, 0, kCountLimit);
  check_size("--moe-router-group-topk", moe_router_group_topk, 0, kCountLimit);
  check_size("--moe-router-group-score-topk", moe_router_group_score_topk, 0, kCountLimit);
}

void MoEConfig::validate() const {
  validate_sizes();
  MOE_CHECK(hidden_size > 0, "--hidden-size must be positive, got ", hidden_size);
  MOE_CHECK(num_experts > 0, "--num-experts must be positive, got ", num_experts);
  MOE_CHECK(moe_ffn_hidden_size > 0, "--moe-ffn-hidden-size must be positive, got ",
            moe_ffn_hidden_size);
  MOE_CHECK(moe_shared_expert_intermediate_size >= 0,
            "--moe-shared-expert-intermediate-size must not be negative");
  MOE_CHECK(!moe_shared_expert_gate || moe_shared_expert_intermediate_size > 0,
            "the shared-expert gate needs --moe-shared-expert-intermediate-size");
  // Megatron-LM's rule (the allgather dispatcher's exchange is not split to overlap).
  MOE_CHECK(!moe_shared_expert_overlap || moe_shared_expert_intermediate_size == 0 ||
                moe_token_dispatcher_type == DispatcherType::alltoall,
            "--moe-shared-expert-overlap works with --moe-token-dispatcher-type alltoall, not ",
            name(moe_token_dispatcher_type));
  MOE_CHECK(moe_router_topk >= 1 && moe_router_topk <= num_experts, "--moe-router-topk ",
            moe_router_topk, " must be between 1 and --num-experts ", num_experts);

  const LoadBalancingType balancing = load_balancing();
  const bool softmax = moe_router_score_function == ops::ScoreFunction::softmax;

  MOE_CHECK(!moe_router_pre_softmax || softmax,
            "--moe-router-pre-softmax applies to --moe-router-score-function softmax only");
  MOE_CHECK(!(moe_router_topk == 1 && softmax && !moe_router_pre_softmax &&
              balancing != LoadBalancingType::sinkhorn),
            "--moe-router-topk 1 with softmax scores needs --moe-router-pre-softmax (a softmax "
            "over one chosen logit is always 1, so the router would get no gradient)");

  // Group-limited routing.
  MOE_CHECK((moe_router_num_groups > 0) == (moe_router_group_topk > 0),
            "--moe-router-num-groups and --moe-router-group-topk must be given together (got ",
            moe_router_num_groups, " groups, group top-k ", moe_router_group_topk, ")");
  if (moe_router_num_groups > 0) {
    MOE_CHECK(num_experts % moe_router_num_groups == 0, "--num-experts ", num_experts,
              " is not divisible by --moe-router-num-groups ", moe_router_num_groups);
    MOE_CHECK(moe_router_group_topk <= moe_router_num_groups, "--moe-router-group-topk ",
              moe_router_group_topk, " exceeds --moe-router-num-groups ", moe_router_num_groups);
    MOE_CHECK(moe_router_topk % moe_router_group_topk == 0, "--moe-router-topk ", moe_router_topk,
              " must be a multiple of --moe-router-group-topk ", moe_router_group_topk);
    MOE_CHECK(moe_router_topk <= moe_router_group_topk * (num_experts / moe_router_num_groups),
              "--moe-router-topk ", moe_router_topk, " exceeds the experts in the kept groups");
    MOE_CHECK(moe_router_topk / moe_router_group_topk <= num_experts / moe_router_num_groups,
              "each kept group must hold --moe-router-topk / --moe-router-group-topk experts");
    MOE_CHECK(moe_router_group_score_topk >= 0 &&
                  moe_router_group_score_topk <= num_experts / moe_router_num_groups,
              "--moe-router-group-score-topk ", moe_router_group_score_topk,
              " must be in [0, experts per group = ", num_experts / moe_router_num_groups, "]");
  } else {
    MOE_CHECK(moe_router_group_score_topk == 0,
              "--moe-router-group-score-topk needs --moe-router-num-groups");
  }
  if (moe_router_topk_scaling_factor)
    MOE_CHECK(*moe_router_topk_scaling_factor > 0,
              "--moe-router-topk-scaling-factor must be positive");

  // Load balancing.
  MOE_CHECK(moe_aux_loss_coeff >= 0, "--moe-aux-loss-coeff must not be negative");
  if (balancing == LoadBalancingType::sinkhorn) {
    MOE_CHECK(moe_aux_loss_coeff == 0,
              "--moe-router-load-balancing-type sinkhorn balances by itself: drop "
              "--moe-aux-loss-coeff (got ",
              moe_aux_loss_coeff, ")");
    MOE_CHECK(!moe_expert_capacity_factor,
              "--moe-expert-capacity-factor is not supported with sinkhorn load balancing");
    MOE_CHECK(!moe_router_enable_expert_bias,
              "--moe-router-enable-expert-bias is not supported with sinkhorn load balancing");
    MOE_CHECK(moe_router_num_groups == 0,
              "group-limited routing is not supported with sinkhorn load balancing");
    MOE_CHECK(!moe_router_force_load_balancing,
              "--moe-router-force-load-balancing replaces the routing; not with sinkhorn");
  }
  if (balancing == LoadBalancingType::none)
    MOE_CHECK(moe_aux_loss_coeff == 0, "--moe-aux-loss-coeff ", moe_aux_loss_coeff,
              " is given but --moe-router-load-balancing-type is none");
  if (moe_router_enable_expert_bias)
    MOE_CHECK(moe_router_bias_update_rate >= 0,
              "--moe-router-bias-update-rate must not be negative");
  if (moe_z_loss_coeff)
    MOE_CHECK(*moe_z_loss_coeff >= 0, "--moe-z-loss-coeff must not be negative");
  if (moe_input_jitter_eps)
    MOE_CHECK(*moe_input_jitter_eps > 0 && *moe_input_jitter_eps < 1,
              "--moe-input-jitter-eps must be in (0, 1), got ", *moe_input_jitter_eps);

  // Capacity.
  if (moe_expert_capacity_factor)
    MOE_CHECK(*moe_expert_capacity_factor > 0, "--moe-expert-capacity-factor must be positive");
  MOE_CHECK(!moe_pad_expert_input_to_capacity || moe_expert_capacity_factor,
            "--moe-pad-expert-input-to-capacity needs --moe-expert-capacity-factor");
  if (moe_expert_rank_capacity_factor) {
    const double f = *moe_expert_rank_capacity_factor;
    MOE_CHECK(std::isfinite(f) && f > 0, "--moe-expert-rank-capacity-factor must be positive, got ",
              f);
    MOE_CHECK(moe_token_dispatcher_type == DispatcherType::alltoall,
              "--moe-expert-rank-capacity-factor sizes the alltoall dispatcher's exchange; add "
              "--moe-token-dispatcher-type alltoall (the allgather dispatcher's sizes are fixed "
              "already)");
    MOE_CHECK(!moe_pad_expert_input_to_capacity,
              "--moe-expert-rank-capacity-factor: --moe-pad-expert-input-to-capacity exchanges "
              "fixed sizes already (every expert padded to its capacity); give one of them");
  }

  // Parallelism.
  MOE_CHECK(expert_model_parallel_size >= 1 && expert_tensor_parallel_size >= 1,
            "--expert-model-parallel-size and --expert-tensor-parallel-size must be positive");
  MOE_CHECK(num_experts % expert_model_parallel_size == 0, "--num-experts ", num_experts,
            " is not divisible by --expert-model-parallel-size ", expert_model_parallel_size);
  MOE_CHECK(moe_ffn_hidden_size % expert_tensor_parallel_size == 0, "--moe-ffn-hidden-size ",
            moe_ffn_hidden_size, " is not divisible by --expert-tensor-parallel-size ",
            expert_tensor_parallel_size);
  MOE_CHECK(is_floating(params_dtype) && dtype_size(params_dtype) >= 2,
            "parameter dtype must be f64, f32, bf16 or f16, got ", params_dtype);
}

}  // namespace moe::nn
