// MoEConfig: every option of the MoE layer, named as Megatron-LM's flags are (--num-experts ->
// num_experts, --moe-router-topk -> moe_router_topk, ...), validated in one place with errors
// that name the flags involved. The CLI maps flags onto these fields one to one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "moe/core/dtype.h"
#include "moe/ops/grouped_gemm.h"
#include "moe/ops/permute.h"
#include "moe/ops/router.h"

namespace moe::nn {

// The options that take one of a few names are enums, parsed once where a name enters (flags,
// model_config.json, config.json, the zoo) and named again where one leaves (files, logs). The
// parse_* functions throw moe::Error naming the flag and the accepted names; name() gives the
// flag's spelling back. The score function is ops::ScoreFunction (ops/router.h), the drop
// policy ops::DropPolicy (ops/permute.h).
enum class LoadBalancingType { aux_loss, seq_aux_loss, global_aux_loss, sinkhorn, none };
enum class DispatcherType { allgather, alltoall };
enum class RouterDType { fp32, fp64 };

LoadBalancingType parse_load_balancing_type(const std::string& name);
ops::ScoreFunction parse_score_function(const std::string& name);
DispatcherType parse_dispatcher_type(const std::string& name);
RouterDType parse_router_dtype(const std::string& name);
ops::DropPolicy parse_drop_policy(const std::string& name);
const char* name(LoadBalancingType type);
const char* name(ops::ScoreFunction function);
const char* name(DispatcherType type);
const char* name(RouterDType dtype);
const char* name(ops::DropPolicy policy);
// ops::parse_grouped_gemm_backend / ops::grouped_gemm_backend_name, under the common name.
const char* name(ops::GroupedGemmBackend backend);

struct MoEConfig {
  // Shape.
  int64_t hidden_size = 0;          // --hidden-size
  int64_t num_experts = 0;          // --num-experts
  int64_t moe_ffn_hidden_size = 0;  // --moe-ffn-hidden-size
  int64_t moe_shared_expert_intermediate_size =
      0;                                // --moe-shared-expert-intermediate-size (0: none)
  bool moe_shared_expert_gate = false;  // sigmoid gate on the shared expert (Qwen2-MoE)
  // --moe-shared-expert-overlap: the shared expert computes while the alltoall dispatcher's
  // exchanges are in flight (its forward during the dispatch, its backward during the combine's
  // backward); the same result. Not a property of the model: not saved with it.
  bool moe_shared_expert_overlap = false;

  // Router.
  int64_t moe_router_topk = 2;  // --moe-router-topk
  // --moe-router-load-balancing-type aux_loss|seq_aux_loss|global_aux_loss|sinkhorn|none
  LoadBalancingType moe_router_load_balancing_type = LoadBalancingType::aux_loss;
  // --moe-router-score-function softmax|sigmoid
  ops::ScoreFunction moe_router_score_function = ops::ScoreFunction::softmax;
  bool moe_router_pre_softmax = false;  // --moe-router-pre-softmax
  int64_t moe_router_num_groups = 0;    // --moe-router-num-groups
  int64_t moe_router_group_topk = 0;    // --moe-router-group-topk
  // --moe-router-group-score-topk (moecore): a group's score is the sum of its best this-many
  // scores; 0 = topk / group_topk (Megatron). 1 = DeepSeek-V2's group_limited_greedy (the
  // group's best expert); DeepSeek-V3's noaux_tc always sums 2.
  int64_t moe_router_group_score_topk = 0;
  std::optional<double> moe_router_topk_scaling_factor;  // --moe-router-topk-scaling-factor
  bool moe_router_enable_expert_bias = false;            // --moe-router-enable-expert-bias
  double moe_router_bias_update_rate = 1e-3;             // --moe-router-bias-update-rate
  RouterDType moe_router_dtype = RouterDType::fp32;      // --moe-router-dtype fp32|fp64
  bool moe_router_force_load_balancing = false;          // --moe-router-force-load-balancing
  double moe_aux_loss_coeff = 0.0;                       // --moe-aux-loss-coeff
  std::optional<double> moe_z_loss_coeff;                // --moe-z-loss-coeff
  std::optional<double> moe_input_jitter_eps;            // --moe-input-jitter-eps

  // Dispatch.
  DispatcherType moe_token_dispatcher_type = DispatcherType::allgather;  // allgather|alltoall
  std::optional<double> moe_expert_capacity_factor;  // --moe-expert-capacity-factor
  bool moe_pad_expert_input_to_capacity = false;     // --moe-pad-expert-input-to-capacity
  ops::DropPolicy moe_token_drop_policy = ops::DropPolicy::probs;  // --moe-token-drop-policy
  bool moe_router_padding_for_fp8 = false;                         // --moe-router-padding-for-fp8
  // --moe-expert-rank-capacity-factor F: the alltoall dispatcher's sync-free exchange, fixed
  // slots of ceil(T * K * F / EP) rows per rank pair (alltoall_dispatcher.h); unset: the
  // exchange is sized from the counts read on the host.
  std::optional<double> moe_expert_rank_capacity_factor;

  // Experts.
  bool moe_grouped_gemm = true;  // --moe-grouped-gemm (Megatron's default is off; ours is on)
  // --moe-grouped-gemm-backend (moecore's): how the CUDA grouped GEMM runs (ops/grouped_gemm.h);
  // cutlass reads the counts on the device, so a one-rank layer does not synchronise.
  ops::GroupedGemmBackend moe_grouped_gemm_backend = ops::GroupedGemmBackend::automatic;

  // Parallelism of the expert layers.
  int expert_model_parallel_size = 1;   // --expert-model-parallel-size
  int expert_tensor_parallel_size = 1;  // --expert-tensor-parallel-size

  // Numerics: parameter / activation dtype (bf16 on GPU; f32 or f64 on CPU).
  DType params_dtype = DType::f32;
  uint64_t seed = 1234;           // initialisation and jitter
  double init_method_std = 0.02;  // --init-method-std

  // Throws moe::Error naming the offending flags for every invalid combination. Starts with
  // validate_sizes().
  void validate() const;
  // The size fields (experts, FFN sizes, top-k, groups) within their least value and their
  // bound (config_limits.h); an MoE-less config passes with its zeros.
  void validate_sizes() const;

  // Derived views.
  LoadBalancingType load_balancing() const { return moe_router_load_balancing_type; }
  DispatcherType dispatcher() const { return moe_token_dispatcher_type; }
  ops::TopKConfig topk_config() const;
  DType router_dtype() const {
    return moe_router_dtype == RouterDType::fp64 ? DType::f64 : DType::f32;
  }
  int64_t num_local_experts() const { return num_experts / expert_model_parallel_size; }
  int64_t local_ffn_size() const { return moe_ffn_hidden_size / expert_tensor_parallel_size; }
};

}  // namespace moe::nn
