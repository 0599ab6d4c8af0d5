// Hugging Face config.json -> ModelConfig, for the model types moecore trains: mixtral,
// qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3. The mapping, field by field:
//
//   every family  num_hidden_layers -> num_layers, hidden_size, intermediate_size ->
//                 ffn_hidden_size (dense MLPs), num_attention_heads, num_key_value_heads ->
//                 num_query_groups (absent: = heads), vocab_size, max_position_embeddings,
//                 rms_norm_eps -> norm_epsilon, rope_theta -> rotary_base, initializer_range ->
//                 init_method_std, attention_dropout (absent: 0.0), tie_word_embeddings ->
//                 !untie_embeddings_and_output_weights,
//                 rope_scaling {"type"/"rope_type": "yarn", ...} -> yarn; hidden_act must be silu
//                 (SwiGLU experts and MLPs).
//   mixtral       GQA, head_dim (absent: hidden / heads) -> kv_channels; every layer MoE;
//                 num_local_experts, num_experts_per_tok, experts of size intermediate_size;
//                 routing softmax then top-k then renormalise == Megatron's softmax over the
//                 top-k logits (no --moe-router-pre-softmax); router_aux_loss_coef ->
//                 aux_loss; router_jitter_noise > 0 -> --moe-input-jitter-eps.
//   qwen2_moe     as mixtral plus q/k/v biases (qkv_bias, default true); head_dim ->
//                 kv_channels; num_experts (transformers 5 writes num_local_experts),
//                 moe_intermediate_size; a shared expert of shared_expert_intermediate_size
//                 with a sigmoid gate (moe_shared_expert_gate); layer i is MoE iff
//                 i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0;
//                 norm_topk_prob false (Qwen's choice): the top-k softmax probabilities are not
//                 renormalised == --moe-router-pre-softmax; true == plain softmax top-k.
//   qwen3_moe     as qwen2_moe without biases (attention_bias must be false) and without a shared
//                 expert, with --qk-layernorm (q_norm / k_norm per head) and head_dim ->
//                 kv_channels.
//   deepseek_v2/3 MLA: q_lora_rank (null: 0), kv_lora_rank, qk_nope_head_dim -> qk_head_dim,
//                 qk_rope_head_dim -> qk_pos_emb_head_dim, v_head_dim; --qk-layernorm (the
//                 latent norms); interleaved rotary (V3 with rope_interleave false: half); layer i
//                 is MoE iff i >= first_k_dense_replace and i % moe_layer_freq == 0;
//                 n_routed_experts, moe_intermediate_size, shared experts of n_shared_experts *
//                 moe_intermediate_size (no gate); scoring_func softmax|sigmoid; topk_method greedy
//                 (no groups), group_limited_greedy or noaux_tc (n_group / topk_group ->
//                 --moe-router-num-groups / --moe-router-group-topk when n_group > 1; noaux_tc adds
//                 the expert bias,
//                 --moe-router-enable-expert-bias); norm_topk_prob false with softmax ->
//                 --moe-router-pre-softmax; routed_scaling_factor -> --moe-router-topk-scaling-
//                 factor (V2 applies it only when it does not renormalise, V3 always; 1.0 ->
//                 unset); seq_aux -> seq_aux_loss else aux_loss, with aux_loss_alpha;
//                 deepseek_v3's num_nextn_predict_layers -> --mtp-num-layers.
//
// Missing fields: the shape fields (sizes, counts, ranks) are required and a missing one is an
// error naming it; each is checked against its least value and its bound (config_limits.h) as
// it is read, before anything is computed from it (hidden / heads, the layer pattern).
// Behaviour fields missing from the file take transformers' defaults for that
// configuration class (documented in hf_config_import.cpp next to each read). Anything moecore
// cannot express is refused with the reason: other model types, other rope scalings, sliding-window
// attention, attention / o_proj biases, sigmoid routing without renormalisation.
// Group scores: DeepSeek-V2's group_limited_greedy ranks groups by their best expert
// (--moe-router-group-score-topk 1), V3's noaux_tc by the sum of their best two (2);
// Megatron's default (0) sums topk / group_topk, the same for V3's published shape.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/nn/model_config.h"

namespace moe::checkpoint {

// The supported model_type values, in the order listed above.
const std::vector<std::string>& hf_supported_model_types();

// config.json (parsed) -> a validate()d ModelConfig; `name` goes to ModelConfig::name.
nn::ModelConfig from_hf_config(const nlohmann::json& config, const std::string& name = "");
// From a config.json file, or a model folder holding one; the name defaults to the folder's
// name (".../Mixtral-8x7B-v0.1/config.json" -> "Mixtral-8x7B-v0.1"). Errors name the path.
nn::ModelConfig from_hf_config_file(const std::string& path);

}  // namespace moe::checkpoint
