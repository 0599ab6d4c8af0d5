// ModelConfig -> HF config.json (hf_config_export.h). Each family writes the keys its
// transformers configuration class reads (MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig,
// DeepseekV2Config, DeepseekV3Config).
#include "moe/checkpoint/hf_config_export.h"

#include <set>

#include "moe/checkpoint/hf_config_import.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/nn/model_config_json.h"

namespace moe::checkpoint {

using nlohmann::json;

namespace {

// Training options HF's config.json does not hold (see the header).
const std::set<std::string>& training_only_keys() {
  static const std::set<std::string> keys{"name", "mtp_loss_scaling_factor", "hidden_dropout"};
  return keys;
}
const std::set<std::string>& training_only_moe_keys() {
  static const std::set<std::string> keys{"moe_router_load_balancing_type",
                                          "moe_aux_loss_coeff",
                                          "moe_z_loss_coeff",
                                          "moe_input_jitter_eps",
                                          "moe_token_dispatcher_type",
                                          "moe_expert_capacity_factor",
                                          "moe_pad_expert_input_to_capacity",
                                          "moe_token_drop_policy",
                                          "moe_router_padding_for_fp8",
                                          "moe_grouped_gemm",
                                          "moe_grouped_gemm_backend",
                                          "expert_model_parallel_size",
                                          "expert_tensor_parallel_size",
                                          "params_dtype",
                                          "seed",
                                          "moe_router_bias_update_rate",
                                          "moe_router_dtype",
                                          "moe_router_force_load_balancing"};
  return keys;
}

void write_common(const nn::ModelConfig& c, const char* architecture, DType dtype, json& j) {
  j["architectures"] = json::array({architecture});
  j["model_type"] = c.family;
  j["num_hidden_layers"] = c.num_layers;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.ffn_hidden_size;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_query_groups;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.norm_epsilon;
  j["rope_theta"] = c.rotary_base;
  j["initializer_range"] = c.init_method_std;
  j["tie_word_embeddings"] = !c.untie_embeddings_and_output_weights;
  j["hidden_act"] = "silu";
  // Every one of these configuration classes has attention_dropout (on the attention
  // probabilities in training, as --attention-dropout); none has a hidden dropout.
  j["attention_dropout"] = c.attention_dropout;
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype_name(dtype);
  if (c.yarn) {
    const nn::YarnConfig& y = *c.yarn;
    j["rope_scaling"] = {{"type", "yarn"},
                         {"rope_type", "yarn"},
                         {"factor", y.factor},
                         {"original_max_position_embeddings", y.original_max_position_embeddings},
                         {"beta_fast", y.beta_fast},
                         {"beta_slow", y.beta_slow},
                         {"mscale", y.mscale},
                         {"mscale_all_dim", y.mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
}

// The dense layers as Qwen's mlp_only_layers (with decoder_sparse_step 1).
json dense_layers(const nn::ModelConfig& c) {
  json list = json::array();
  for (int64_t l = 0; l < c.num_layers; ++l)
    if (!c.is_moe_layer(l)) list.push_back(l);
  return list;
}

void write_mixtral(const nn::ModelConfig& c, json& j) {
  const nn::MoEConfig& m = c.moe;
  j["head_dim"] = c.head_dim();
  j["num_local_experts"] = m.num_experts;
  j["num_experts_per_tok"] = m.moe_router_topk;
  j["router_aux_loss_coef"] = m.moe_aux_loss_coeff;
  j["router_jitter_noise"] = m.moe_input_jitter_eps.value_or(0.0);
  j["output_router_logits"] = false;
  j["sliding_window"] = nullptr;
}

void write_qwen(const nn::ModelConfig& c, bool qwen3, json& j) {
  const nn::MoEConfig& m = c.moe;
  if (qwen3) {
    j["head_dim"] = c.head_dim();
    j["attention_bias"] = false;
  } else {
    j["qkv_bias"] = c.add_qkv_bias;
    j["shared_expert_intermediate_size"] = m.moe_shared_expert_intermediate_size;
  }
  j["num_experts"] = m.num_experts;
  j["num_experts_per_tok"] = m.moe_router_topk;
  j["moe_intermediate_size"] = m.moe_ffn_hidden_size;
  j["norm_topk_prob"] = !m.moe_router_pre_softmax;
  j["router_aux_loss_coef"] = m.moe_aux_loss_coeff;
  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = dense_layers(c);
  j["use_sliding_window"] = false;
  j["sliding_window"] = nullptr;
  j["output_router_logits"] = false;
}

void write_deepseek(const nn::ModelConfig& c, bool v3, json& j) {
  const nn::MlaConfig& a = c.mla;
  j["q_lora_rank"] = a.q_lora_rank > 0 ? json(a.q_lora_rank) : json(nullptr);
  j["kv_lora_rank"] = a.kv_lora_rank;
  j["qk_nope_head_dim"] = a.qk_head_dim;
  j["qk_rope_head_dim"] = a.qk_pos_emb_head_dim;
  j["v_head_dim"] = a.v_head_dim;
  j["attention_bias"] = false;
  const nn::MoEConfig& m = c.moe;
  // MoE placement: layer i is MoE iff i >= first_k_dense_replace and i % moe_layer_freq == 0;
  // the first MoE layer and the gap to the next one (the round trip checks the rest).
  int64_t first = c.num_layers, every = 1;
  for (int64_t l = 0; l < c.num_layers; ++l)
    if (c.is_moe_layer(l)) {
      if (first == c.num_layers) {
        first = l;
      } else {
        every = l - first;
        break;
      }
    }
  if (m.num_experts == 0 || first == c.num_layers) {
    j["n_routed_experts"] = nullptr;
  } else {
    // HF's rule needs first % every == 0 for layer `first` to be MoE; otherwise the round trip
    // reports the placement.
    j["n_routed_experts"] = m.num_experts;
    j["num_experts_per_tok"] = m.moe_router_topk;
    j["moe_intermediate_size"] = m.moe_ffn_hidden_size;
    const int64_t Fs = m.moe_shared_expert_intermediate_size, F = m.moe_ffn_hidden_size;
    j["n_shared_experts"] = F > 0 && Fs % F == 0 ? Fs / F : Fs;  // a non-multiple fails the check
    j["scoring_func"] = nn::name(m.moe_router_score_function);
    const bool sigmoid = m.moe_router_score_function == ops::ScoreFunction::sigmoid;
    j["norm_topk_prob"] = sigmoid ? true : !m.moe_router_pre_softmax;
    const bool groups = m.moe_router_num_groups > 1;
    j["topk_method"] = m.moe_router_enable_expert_bias ? "noaux_tc"
                       : groups                        ? "group_limited_greedy"
                                                       : "greedy";
    j["n_group"] = groups ? m.moe_router_num_groups : 1;
    j["topk_group"] = groups ? m.moe_router_group_topk : 1;
    j["routed_scaling_factor"] = m.moe_router_topk_scaling_factor.value_or(1.0);
    j["seq_aux"] = m.moe_router_load_balancing_type == nn::LoadBalancingType::seq_aux_loss;
    j["aux_loss_alpha"] = m.moe_aux_loss_coeff;
  }
  j["first_k_dense_replace"] = first;
  j["moe_layer_freq"] = every;
  if (v3) j["num_nextn_predict_layers"] = c.mtp_num_layers;
}

// Differences between two model_config_to_json objects, "key: a vs b", split into the fields
// that change the model and the training-only ones.
void diff(const json& want, const json& got, const std::string& prefix,
          const std::set<std::string>& ignored, std::vector<std::string>& model,
          std::vector<std::string>& training) {
  for (auto it = want.begin(); it != want.end(); ++it) {
    const json& other = got.contains(it.key()) ? got.at(it.key()) : json(nullptr);
    if (prefix.empty() && it.key() == "moe") {
      diff(*it, other, "moe.", training_only_moe_keys(), model, training);
      continue;
    }
    if (*it == other) continue;
    const std::string line = prefix + it.key() + ": " + json_excerpt(*it) + " here, " +
                             json_excerpt(other) + " as Hugging Face reads it";
    (ignored.count(it.key()) ? training : model).push_back(line);
  }
}

}  // namespace

std::string torch_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::bf16:
      return "bfloat16";
    case DType::f32:
      return "float32";
    case DType::f16:
      return "float16";
    case DType::f64:
      return "float64";
    case DType::fp8_e4m3:
      return "float8_e4m3fn";
    case DType::fp8_e5m2:
      return "float8_e5m2";
    default:
      MOE_FAIL("torch_dtype: ", dtype, " is not a weight dtype");
  }
}

json to_hf_config(const nn::ModelConfig& c, DType torch_dtype, std::vector<std::string>* notes) {
  c.validate();
  json j = json::object();
  if (c.family == "mixtral") {
    write_common(c, "MixtralForCausalLM", torch_dtype, j);
    write_mixtral(c, j);
  } else if (c.family == "qwen2_moe" || c.family == "qwen3_moe") {
    const bool qwen3 = c.family == "qwen3_moe";
    write_common(c, qwen3 ? "Qwen3MoeForCausalLM" : "Qwen2MoeForCausalLM", torch_dtype, j);
    write_qwen(c, qwen3, j);
  } else if (c.family == "deepseek_v2" || c.family == "deepseek_v3") {
    const bool v3 = c.family == "deepseek_v3";
    write_common(c, v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM", torch_dtype, j);
    write_deepseek(c, v3, j);
  } else {
    MOE_FAIL("model ", c.name, ": family \"", c.family,
             "\" has no Hugging Face config; the families are mixtral, qwen2_moe, qwen3_moe, "
             "deepseek_v2, deepseek_v3");
  }

  // Read it back the way a user of the export will.
  nn::ModelConfig back;
  try {
    back = from_hf_config(j, c.name);
  } catch (const Error& e) {
    MOE_FAIL("model ", c.name, " cannot be written as a Hugging Face ", c.family,
             " config: ", e.what());
  }
  std::vector<std::string> model, training;
  diff(nn::model_config_to_json(c), nn::model_config_to_json(back), "", training_only_keys(), model,
       training);
  if (!model.empty()) {
    std::string lines;
    for (const std::string& l : model) lines += "\n  " + l;
    MOE_FAIL("model ", c.name, " cannot be expressed as a Hugging Face ", c.family,
             " config.json; these fields would change:", lines);
  }
  if (notes)
    for (const std::string& l : training)
      notes->push_back("config.json does not hold the training option " + l);
  return j;
}

}  // namespace moe::checkpoint
