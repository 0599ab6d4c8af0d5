// Hugging Face config.json -> ModelConfig (hf_config_import.h has the mapping). Defaults of the
// behaviour fields are those of transformers' MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig,
// DeepseekV2Config and DeepseekV3Config; shape fields have no default here.
#include "moe/checkpoint/hf_config_import.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/nn/config_limits.h"

namespace moe::checkpoint {

// What this file fills, and the limits it checks the file's numbers against, are the model's.
using nn::AttentionType;
using nn::check_size;
using nn::kCountLimit;
using nn::kLayerLimit;
using nn::kPositionLimit;
using nn::kVocabLimit;
using nn::kWidthLimit;
using nn::LoadBalancingType;
using nn::ModelConfig;
using nn::MoEConfig;
using nn::RotaryStyle;
using nn::SizeLimit;
using nn::YarnConfig;

using nlohmann::json;

namespace {

// Typed access to the fields of one config.json; errors name the field and the model type.
class HfFields {
 public:
  HfFields(const json& config, std::string model_type)
      : config_(config), model_type_(std::move(model_type)) {}

  // Absent and null read as missing (HF writes null for "not set").
  const json* find(const char* key) const {
    auto it = config_.find(key);
    return it == config_.end() || it->is_null() ? nullptr : &*it;
  }
  bool has(const char* key) const { return find(key) != nullptr; }

  int64_t required_int(const char* key) const {
    const json* v = find(key);
    MOE_CHECK(v, "Hugging Face config (model_type ", model_type_, ") lacks the required field \"",
              key, "\"");
    return as_int(key, *v);
  }
  int64_t int_or(const char* key, int64_t fallback) const {
    const json* v = find(key);
    return v ? as_int(key, *v) : fallback;
  }
  // A size field (a count, a width, a rank): required, or `fallback` when absent; checked
  // against `min` and its bound (config_limits.h) as soon as it is read, before anything is
  // computed from it.
  int64_t required_size(const char* key, int64_t min, const SizeLimit& limit) const {
    const int64_t value = required_int(key);
    check_size(field(key), value, min, limit);
    return value;
  }
  int64_t size_or(const char* key, int64_t fallback, int64_t min, const SizeLimit& limit) const {
    const int64_t value = int_or(key, fallback);
    check_size(field(key), value, min, limit);
    return value;
  }
  double number_or(const char* key, double fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    MOE_CHECK(v->is_number(), "Hugging Face config (model_type ", model_type_, ") field \"", key,
              "\" must be a number, got ", json_excerpt(*v));
    return v->get<double>();
  }
  bool bool_or(const char* key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    MOE_CHECK(v->is_boolean(), "Hugging Face config (model_type ", model_type_, ") field \"", key,
              "\" must be true or false, got ", json_excerpt(*v));
    return v->get<bool>();
  }
  std::string string_or(const char* key, const std::string& fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    MOE_CHECK(v->is_string(), "Hugging Face config (model_type ", model_type_, ") field \"", key,
              "\" must be a string, got ", json_excerpt(*v));
    return v->get<std::string>();
  }
  std::vector<int64_t> int_list_or_empty(const char* key) const {
    const json* v = find(key);
    std::vector<int64_t> out;
    if (!v) return out;
    MOE_CHECK(v->is_array(), "Hugging Face config (model_type ", model_type_, ") field \"", key,
              "\" must be a list of layer indices, got ", json_excerpt(*v));
    for (const json& e : *v) out.push_back(as_int(key, e));
    return out;
  }

  [[noreturn]] void unsupported(const std::string& what) const {
    MOE_FAIL("Hugging Face config (model_type ", model_type_, "): ", what);
  }
  const std::string& model_type() const { return model_type_; }

 private:
  std::string field(const char* key) const {
    return "Hugging Face config (model_type " + model_type_ + ") field \"" + key + "\"";
  }

  int64_t as_int(const char* key, const json& v) const {
    // Integral floats ("factor": 40.0) are accepted: JSON writers differ.
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::abs(d) < 9e15 && d == std::floor(d)) return static_cast<int64_t>(d);
    }
    MOE_CHECK(v.is_number_integer(), "Hugging Face config (model_type ", model_type_, ") field \"",
              key, "\" must be an integer, got ", json_excerpt(v));
    MOE_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t{INT64_MAX},
              "Hugging Face config (model_type ", model_type_, ") field \"", key, "\" ",
              json_excerpt(v), " does not fit a 64-bit integer");
    return v.get<int64_t>();
  }

  const json& config_;
  std::string model_type_;
};

// The fields every family shares (hf_config_import.h, "every family").
void read_common(const HfFields& f, ModelConfig& c, double default_rope_theta,
                 double default_norm_eps, int64_t default_max_positions) {
  c.family = f.model_type();
  c.num_layers = f.required_size("num_hidden_layers", 1, kLayerLimit);
  c.hidden_size = f.required_size("hidden_size", 1, kWidthLimit);
  c.ffn_hidden_size = f.required_size("intermediate_size", 1, kWidthLimit);
  c.num_attention_heads = f.required_size("num_attention_heads", 1, kCountLimit);
  c.num_query_groups = f.size_or("num_key_value_heads", c.num_attention_heads, 1, kCountLimit);
  c.vocab_size = f.required_size("vocab_size", 1, kVocabLimit);
  c.max_position_embeddings =
      f.size_or("max_position_embeddings", default_max_positions, 1, kPositionLimit);
  c.norm_epsilon = f.number_or("rms_norm_eps", default_norm_eps);
  c.rotary_base = f.number_or("rope_theta", default_rope_theta);
  c.init_method_std = f.number_or("initializer_range", 0.02);
  // On the attention probabilities in training (--attention-dropout); 0.0 by default in every one
  // of these configuration classes.
  c.attention_dropout = f.number_or("attention_dropout", 0.0);
  // Every one of these configuration classes defaults tie_word_embeddings to False.
  c.untie_embeddings_and_output_weights = !f.bool_or("tie_word_embeddings", false);
  const std::string act = f.string_or("hidden_act", "silu");
  if (act != "silu")
    f.unsupported("hidden_act \"" + act + "\": moecore's MLPs and experts are SwiGLU (silu)");
}

// rope_scaling (or transformers 5's rope_parameters): none, "default", or YaRN.
void read_rope_scaling(const HfFields& f, ModelConfig& c) {
  const json* scaling = f.find("rope_scaling");
  if (!scaling) scaling = f.find("rope_parameters");
  if (!scaling) return;
  if (!scaling->is_object()) {
    // Some writers put 0 or false for "none".
    if ((scaling->is_number() && scaling->get<double>() == 0) ||
        (scaling->is_boolean() && !scaling->get<bool>()))
      return;
    f.unsupported("rope_scaling must be an object, got " + json_excerpt(*scaling));
  }
  const HfFields s(*scaling, f.model_type() + ", rope_scaling");
  if (s.has("rope_theta")) c.rotary_base = s.number_or("rope_theta", c.rotary_base);
  const std::string type = s.string_or("type", s.string_or("rope_type", "default"));
  if (type == "default") return;
  if (type != "yarn")
    f.unsupported("rope_scaling type \"" + type + "\" is not supported (only yarn)");
  // DeepSeek's yarn_get_mscale / transformers' _compute_yarn_parameters defaults.
  YarnConfig y;
  y.factor = s.number_or("factor", 0.0);
  MOE_CHECK(y.factor > 0, "Hugging Face config (model_type ", f.model_type(),
            ") rope_scaling yarn lacks the required field \"factor\"");
  y.original_max_position_embeddings =
      s.size_or("original_max_position_embeddings", c.max_position_embeddings, 1, kPositionLimit);
  y.beta_fast = s.number_or("beta_fast", 32.0);
  y.beta_slow = s.number_or("beta_slow", 1.0);
  y.mscale = s.number_or("mscale", 1.0);
  y.mscale_all_dim = s.number_or("mscale_all_dim", 0.0);
  c.yarn = y;
}

// Sliding-window attention is refused unless it is switched off or covers every position.
void refuse_sliding_window(const HfFields& f, const ModelConfig& c, bool enabled) {
  const int64_t window = f.int_or("sliding_window", 0);
  if (enabled && window > 0 && window < c.max_position_embeddings)
    f.unsupported("sliding_window " + std::to_string(window) +
                  " (sliding-window attention) is not supported");
}

// Softmax top-k with or without renormalisation, in Megatron's terms: renormalised top-k of a
// softmax equals the softmax over the k chosen logits (Megatron's default); without
// renormalisation it is --moe-router-pre-softmax.
void set_softmax_topk(MoEConfig& m, bool norm_topk_prob) {
  m.moe_router_score_function = ops::ScoreFunction::softmax;
  m.moe_router_pre_softmax = !norm_topk_prob;
}

ModelConfig mixtral(const HfFields& f) {
  ModelConfig c;
  read_common(f, c, /*rope_theta=*/1e6, /*rms_norm_eps=*/1e-5, /*max_positions=*/4096 * 32);
  read_rope_scaling(f, c);
  c.kv_channels = f.size_or("head_dim", c.hidden_size / c.num_attention_heads, 0, kWidthLimit);
  refuse_sliding_window(f, c, true);
  MoEConfig& m = c.moe;
  m.num_experts = f.required_size("num_local_experts", 1, kCountLimit);
  m.moe_router_topk = f.required_size("num_experts_per_tok", 1, kCountLimit);
  m.moe_ffn_hidden_size = c.ffn_hidden_size;  // Mixtral's experts are its MLPs
  set_softmax_topk(m, /*norm_topk_prob=*/true);
  m.moe_router_load_balancing_type = LoadBalancingType::aux_loss;
  m.moe_aux_loss_coeff = f.number_or("router_aux_loss_coef", 0.001);
  const double jitter = f.number_or("router_jitter_noise", 0.0);
  if (jitter > 0) m.moe_input_jitter_eps = jitter;
  c.moe_layer_pattern.assign(static_cast<size_t>(c.num_layers), 1);
  return c;
}

ModelConfig qwen_moe(const HfFields& f, bool qwen3) {
  ModelConfig c;
  read_common(f, c, /*rope_theta=*/10000.0, /*rms_norm_eps=*/1e-6, /*max_positions=*/32768);
  read_rope_scaling(f, c);
  refuse_sliding_window(f, c, f.bool_or("use_sliding_window", false));
  if (qwen3) {
    c.kv_channels = f.size_or("head_dim", c.hidden_size / c.num_attention_heads, 0, kWidthLimit);
    c.qk_layernorm = true;
    if (f.bool_or("attention_bias", false))
      f.unsupported("attention_bias true (biases on q/k/v and o_proj) is not supported");
  } else {
    c.kv_channels = f.size_or("head_dim", c.hidden_size / c.num_attention_heads, 0, kWidthLimit);
    c.add_qkv_bias = f.bool_or("qkv_bias", true);  // Qwen2-MoE's q/k/v projections have biases
  }
  MoEConfig& m = c.moe;
  // The published configs say num_experts; transformers 5 writes num_local_experts.
  m.num_experts = f.has("num_experts") || !f.has("num_local_experts")
                      ? f.required_size("num_experts", 0, kCountLimit)
                      : f.required_size("num_local_experts", 0, kCountLimit);
  m.moe_router_topk = f.required_size("num_experts_per_tok", 1, kCountLimit);
  m.moe_ffn_hidden_size = f.required_size("moe_intermediate_size", 1, kWidthLimit);
  if (!qwen3) {
    // Qwen2-MoE: one shared expert, its output scaled by sigmoid(x w_gate), w_gate [1, H].
    m.moe_shared_expert_intermediate_size =
        f.required_size("shared_expert_intermediate_size", 0, kWidthLimit);
    m.moe_shared_expert_gate = m.moe_shared_expert_intermediate_size > 0;
  }
  set_softmax_topk(m, f.bool_or("norm_topk_prob", false));
  m.moe_router_load_balancing_type = LoadBalancingType::aux_loss;
  m.moe_aux_loss_coeff = f.number_or("router_aux_loss_coef", 0.001);

  // Qwen2MoeDecoderLayer: sparse iff layer_idx not in mlp_only_layers and num_experts > 0 and
  // (layer_idx + 1) % decoder_sparse_step == 0.
  const int64_t step = f.size_or("decoder_sparse_step", 1, 1, kLayerLimit);
  const std::vector<int64_t> mlp_only = f.int_list_or_empty("mlp_only_layers");
  for (int64_t layer : mlp_only)
    MOE_CHECK(layer >= 0 && layer < c.num_layers, "Hugging Face config (model_type ",
              f.model_type(), ") mlp_only_layers entry ", layer, " is not a layer index below ",
              c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const bool dense = std::find(mlp_only.begin(), mlp_only.end(), i) != mlp_only.end();
    c.moe_layer_pattern.push_back(!dense && m.num_experts > 0 && (i + 1) % step == 0 ? 1 : 0);
  }
  return c;
}

ModelConfig deepseek(const HfFields& f, bool v3) {
  ModelConfig c;
  read_common(f, c, /*rope_theta=*/10000.0, /*rms_norm_eps=*/1e-6,
              /*max_positions=*/v3 ? 4096 : 2048);
  read_rope_scaling(f, c);
  if (f.bool_or("attention_bias", false))
    f.unsupported("attention_bias true (biases on the MLA projections) is not supported");

  c.attention_type = AttentionType::mla;
  // q_lora_rank null in DeepSeek-V2-Lite: no q compression.
  c.mla.q_lora_rank = f.size_or("q_lora_rank", 0, 0, kWidthLimit);
  c.mla.kv_lora_rank = f.required_size("kv_lora_rank", 1, kWidthLimit);
  c.mla.qk_head_dim = f.required_size("qk_nope_head_dim", 1, kWidthLimit);
  c.mla.qk_pos_emb_head_dim = f.required_size("qk_rope_head_dim", 1, kWidthLimit);
  c.mla.v_head_dim = f.required_size("v_head_dim", 1, kWidthLimit);
  c.qk_layernorm = true;  // q_a_layernorm / kv_a_layernorm
  // DeepSeek rotates (x[2i], x[2i+1]) pairs; transformers' V3 port can be told otherwise
  // (rope_interleave false: rotate_half pairs).
  c.rotary_style =
      v3 && !f.bool_or("rope_interleave", true) ? RotaryStyle::half : RotaryStyle::interleaved;

  MoEConfig& m = c.moe;
  m.num_experts = f.size_or("n_routed_experts", 0, 0, kCountLimit);  // null: a dense model
  if (m.num_experts > 0) {
    m.moe_router_topk = f.required_size("num_experts_per_tok", 1, kCountLimit);
    m.moe_ffn_hidden_size = f.required_size("moe_intermediate_size", 1, kWidthLimit);
    // Both factors are bounded, so the product fits; validate() bounds the product itself.
    m.moe_shared_expert_intermediate_size =
        f.size_or("n_shared_experts", 0, 0, kCountLimit) * m.moe_ffn_hidden_size;

    const std::string scoring = f.string_or("scoring_func", v3 ? "sigmoid" : "softmax");
    const std::string method = f.string_or("topk_method", v3 ? "noaux_tc" : "greedy");
    const bool norm = f.bool_or("norm_topk_prob", v3);
    if (scoring == "softmax") {
      set_softmax_topk(m, norm);
    } else if (scoring == "sigmoid") {
      // Megatron (and moecore's router) renormalise sigmoid top-k scores whenever k > 1.
      if (!norm && m.moe_router_topk > 1)
        f.unsupported(
            "scoring_func sigmoid with norm_topk_prob false is not supported (sigmoid "
            "top-k probabilities are always renormalised)");
      m.moe_router_score_function = ops::ScoreFunction::sigmoid;
    } else {
      f.unsupported("scoring_func \"" + scoring + "\" is not one of softmax, sigmoid");
    }

    if (method != "greedy" && method != "group_limited_greedy" && method != "noaux_tc")
      f.unsupported("topk_method \"" + method +
                    "\" is not one of greedy, group_limited_greedy, noaux_tc");
    if (method != "greedy") {
      const int64_t groups = f.size_or("n_group", 1, 1, kCountLimit);
      if (groups > 1) {
        m.moe_router_num_groups = groups;
        m.moe_router_group_topk = f.required_size("topk_group", 1, kCountLimit);
        // V2's group_limited_greedy ranks groups by their best score; V3's noaux_tc by the
        // sum of their best two (transformers' DeepseekV2Moe / DeepseekV3TopkRouter).
        m.moe_router_group_score_topk = method == "group_limited_greedy" ? 1 : 2;
      }
    }
    // noaux_tc: the auxiliary-loss-free balancing of DeepSeek-V3 (e_score_correction_bias).
    m.moe_router_enable_expert_bias = method == "noaux_tc";

    // DeepSeek-V2's gate scales only when it does not renormalise; V3's always.
    const double scaling = f.number_or("routed_scaling_factor", v3 ? 2.5 : 1.0);
    const bool scaled = v3 || !(m.moe_router_topk > 1 && norm);
    if (scaled && scaling != 1.0) m.moe_router_topk_scaling_factor = scaling;

    m.moe_router_load_balancing_type =
        f.bool_or("seq_aux", true) ? LoadBalancingType::seq_aux_loss : LoadBalancingType::aux_loss;
    m.moe_aux_loss_coeff = f.number_or("aux_loss_alpha", 0.001);
  }

  // DeepseekV2/V3 decoder layer: MoE iff n_routed_experts and layer_idx >= first_k_dense_replace
  // and layer_idx % moe_layer_freq == 0.
  const int64_t first_dense = f.size_or("first_k_dense_replace", v3 ? 3 : 0, 0, kLayerLimit);
  const int64_t every = f.size_or("moe_layer_freq", 1, 1, kLayerLimit);
  for (int64_t i = 0; i < c.num_layers; ++i)
    c.moe_layer_pattern.push_back(m.num_experts > 0 && i >= first_dense && i % every == 0 ? 1 : 0);

  if (v3) c.mtp_num_layers = f.size_or("num_nextn_predict_layers", 0, 0, kLayerLimit);
  return c;
}

}  // namespace

const std::vector<std::string>& hf_supported_model_types() {
  static const std::vector<std::string> types{"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2",
                                              "deepseek_v3"};
  return types;
}

ModelConfig from_hf_config(const json& config, const std::string& name) {
  MOE_CHECK(config.is_object(), "a Hugging Face config must be a JSON object, got ",
            config.type_name());
  auto it = config.find("model_type");
  MOE_CHECK(it != config.end() && it->is_string(),
            "the Hugging Face config lacks \"model_type\" (one of mixtral, qwen2_moe, qwen3_moe, "
            "deepseek_v2, deepseek_v3)");
  const std::string type = it->get<std::string>();
  const HfFields fields(config, type);
  ModelConfig c;
  if (type == "mixtral")
    c = mixtral(fields);
  else if (type == "qwen2_moe")
    c = qwen_moe(fields, /*qwen3=*/false);
  else if (type == "qwen3_moe")
    c = qwen_moe(fields, /*qwen3=*/true);
  else if (type == "deepseek_v2")
    c = deepseek(fields, /*v3=*/false);
  else if (type == "deepseek_v3")
    c = deepseek(fields, /*v3=*/true);
  else
    MOE_FAIL("Hugging Face model_type \"", type,
             "\" is not supported; supported: mixtral, qwen2_moe, qwen3_moe, deepseek_v2, "
             "deepseek_v3");
  c.name = name;
  c.moe.hidden_size = c.hidden_size;
  c.moe.init_method_std = c.init_method_std;
  try {
    c.validate();
  } catch (const Error& e) {
    MOE_FAIL("Hugging Face config (model_type ", type, ") maps to an invalid model: ", e.what());
  }
  return c;
}

ModelConfig from_hf_config_file(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path file = path;
  if (fs::is_directory(file)) file /= "config.json";
  const json config = read_json_file(file.string(), "Hugging Face config");
  const fs::path folder = fs::absolute(file).parent_path();
  const std::string name =
      file.filename() == "config.json" ? folder.filename().string() : file.stem().string();
  try {
    return from_hf_config(config, name);
  } catch (const Error& e) {
    MOE_FAIL(file.string(), ": ", e.what());
  }
}

}  // namespace moe::checkpoint
