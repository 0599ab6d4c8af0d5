// ModelConfig <-> JSON (model_config_json.h): strict reading (unknown keys and wrong types are
// errors naming the key), complete writing.
#include "moe/nn/model_config_json.h"

#include <cctype>
#include <set>
#include <sstream>

#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/nn/config_limits.h"

namespace moe::nn {

using nlohmann::json;

// ---- --moe-layer-freq ----------------------------------------------------------------------

namespace {

std::string strip_spaces(const std::string& text) {
  std::string out;
  for (char ch : text)
    if (!std::isspace(static_cast<unsigned char>(ch))) out += ch;
  return out;
}

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char ch : s)
    if (!std::isdigit(static_cast<unsigned char>(ch))) return false;
  return true;
}

int64_t parse_count(const std::string& s, const std::string& text) {
  MOE_CHECK(all_digits(s) && s.size() <= 9, "--moe-layer-freq \"", text, "\": \"", s,
            "\" is not a layer count");
  return std::stoll(s);
}

}  // namespace

std::vector<int> parse_moe_layer_freq(const std::string& text, int64_t num_layers) {
  check_size("--num-layers", num_layers, 1, kLayerLimit);
  std::string s = strip_spaces(text);
  std::vector<int> pattern;
  if (all_digits(s)) {
    // Megatron's integer form: [1 if i % N == 0 else 0 for i in range(num_layers)].
    const int64_t every = parse_count(s, text);
    MOE_CHECK(every >= 1, "--moe-layer-freq ", text, " must be at least 1");
    for (int64_t i = 0; i < num_layers; ++i) pattern.push_back(i % every == 0 ? 1 : 0);
    return pattern;
  }
  if (s.size() >= 2 && s.front() == '(' && s.back() == ')') s = s.substr(1, s.size() - 2);
  MOE_CHECK(!s.empty(), "--moe-layer-freq \"", text, "\" is empty");
  // Terms "[a,b,...]" or "[a,b,...]*n", joined by '+'.
  size_t pos = 0;
  while (pos < s.size()) {
    MOE_CHECK(s[pos] == '[', "--moe-layer-freq \"", text,
              "\": expected a list such as [0]*3+[1]*58, an integer, or [0,1,1]");
    const size_t close = s.find(']', pos);
    MOE_CHECK(close != std::string::npos, "--moe-layer-freq \"", text, "\": unclosed '['");
    std::vector<int> items;
    std::stringstream list(s.substr(pos + 1, close - pos - 1));
    std::string item;
    while (std::getline(list, item, ',')) {
      MOE_CHECK(item == "0" || item == "1", "--moe-layer-freq \"", text, "\": entry \"", item,
                "\" is not 0 (dense) or 1 (MoE)");
      items.push_back(item == "1" ? 1 : 0);
    }
    MOE_CHECK(!items.empty(), "--moe-layer-freq \"", text, "\": empty list");
    pos = close + 1;
    int64_t repeat = 1;
    if (pos < s.size() && s[pos] == '*') {
      size_t end = pos + 1;
      while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
      repeat = parse_count(s.substr(pos + 1, end - pos - 1), text);
      pos = end;
    }
    // Checked before expanding: "[1]*999999999" must not allocate a billion entries.
    MOE_CHECK(static_cast<int64_t>(items.size()) * repeat <=
                  num_layers - static_cast<int64_t>(pattern.size()),
              "--moe-layer-freq \"", text, "\" gives more layers than --num-layers ", num_layers);
    for (int64_t r = 0; r < repeat; ++r) pattern.insert(pattern.end(), items.begin(), items.end());
    if (pos < s.size()) {
      MOE_CHECK(s[pos] == '+', "--moe-layer-freq \"", text, "\": unexpected '", s[pos], "'");
      ++pos;
      MOE_CHECK(pos < s.size(), "--moe-layer-freq \"", text, "\" ends with '+'");
    }
  }
  MOE_CHECK(static_cast<int64_t>(pattern.size()) == num_layers, "--moe-layer-freq \"", text,
            "\" gives ", pattern.size(), " layers but --num-layers is ", num_layers);
  return pattern;
}

std::string format_moe_layer_freq(const std::vector<int>& pattern) {
  const auto n = static_cast<int64_t>(pattern.size());
  for (int64_t every = 1; every <= n; ++every) {
    bool matches = true;
    for (int64_t i = 0; i < n && matches; ++i) matches = pattern[i] == (i % every == 0 ? 1 : 0);
    if (matches && n > 0) return std::to_string(every);
  }
  std::ostringstream out;
  out << '(';
  for (size_t i = 0; i < pattern.size();) {
    size_t run = 1;
    while (i + run < pattern.size() && pattern[i + run] == pattern[i]) ++run;
    if (i > 0) out << '+';
    out << '[' << pattern[i] << ']';
    if (run > 1) out << '*' << run;
    i += run;
  }
  out << ')';
  return out.str();
}

// ---- reading -------------------------------------------------------------------------------

namespace {

// Reads the keys of one JSON object into fields, remembering which keys it was asked for, so
// finish() can refuse the others.
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string where) : object_(object), where_(std::move(where)) {
    MOE_CHECK(object_.is_object(), where_, " must be a JSON object, got ", object_.type_name());
  }

  const json* find(const std::string& key) {
    known_.insert(key);
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }

  void read(const std::string& key, int64_t& out) {
    if (const json* v = find(key)) {
      MOE_CHECK(v->is_number_integer(), where_, key, " must be an integer, got ", json_excerpt(*v));
      MOE_CHECK(!v->is_number_unsigned() || v->get<uint64_t>() <= uint64_t{INT64_MAX}, where_, key,
                " ", json_excerpt(*v), " does not fit a 64-bit integer");
      out = v->get<int64_t>();
    }
  }
  // A size field: read, then checked against `min` and its bound (config_limits.h) before
  // anything is computed from it. Absent: `out` (the default) is left as it is.
  void read_size(const std::string& key, int64_t& out, int64_t min, const SizeLimit& limit) {
    if (find(key) == nullptr) return;
    read(key, out);
    check_size(where_ + key, out, min, limit);
  }
  void read(const std::string& key, int& out) {
    int64_t wide = out;
    read(key, wide);
    MOE_CHECK(wide >= INT32_MIN && wide <= INT32_MAX, where_, key, " ", wide,
              " does not fit a 32-bit integer");
    out = static_cast<int>(wide);
  }
  void read(const std::string& key, uint64_t& out) {
    if (const json* v = find(key)) {
      MOE_CHECK(v->is_number_unsigned(), where_, key, " must be a non-negative integer, got ",
                json_excerpt(*v));
      out = v->get<uint64_t>();
    }
  }
  void read(const std::string& key, double& out) {
    if (const json* v = find(key)) {
      MOE_CHECK(v->is_number(), where_, key, " must be a number, got ", json_excerpt(*v));
      out = v->get<double>();
    }
  }
  void read(const std::string& key, std::optional<double>& out) {
    if (const json* v = find(key)) {
      MOE_CHECK(v->is_number() || v->is_null(), where_, key, " must be a number or null, got ",
                json_excerpt(*v));
      out = v->is_null() ? std::nullopt : std::optional<double>(v->get<double>());
    }
  }
  void read(const std::string& key, bool& out) {
    if (const json* v = find(key)) {
      MOE_CHECK(v->is_boolean(), where_, key, " must be true or false, got ", json_excerpt(*v));
      out = v->get<bool>();
    }
  }
  void read(const std::string& key, std::string& out) {
    if (const json* v = find(key)) {
      MOE_CHECK(v->is_string(), where_, key, " must be a string, got ", json_excerpt(*v));
      out = v->get<std::string>();
    }
  }
  // A named option (moe_config.h's enums): parsed here, once, by its parse_* function.
  template <typename Enum>
  void read(const std::string& key, Enum& out, Enum (*parse)(const std::string&)) {
    std::string text = name(out);
    read(key, text);
    out = parse(text);
  }

  // Unknown keys are errors (a misspelt key would otherwise fall back to a default silently);
  // keys starting with '_' are comments.
  void finish() const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (it.key().starts_with("_") || known_.count(it.key())) continue;
      std::string keys;
      for (const std::string& k : known_) {
        if (!keys.empty()) keys += ", ";
        keys += k;
      }
      MOE_FAIL(where_, "unknown key \"", it.key(), "\"; the known keys are: ", keys);
    }
  }

  const std::string& where() const { return where_; }

 private:
  const json& object_;
  std::string where_;
  std::set<std::string> known_;
};

DType parse_dtype(const std::string& name) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16})
    if (name == dtype_name(dt)) return dt;
  MOE_FAIL("moe.params_dtype \"", name, "\" is not one of f64, f32, bf16, f16");
}

void read_moe(const json& object, MoEConfig& m) {
  ObjectReader r(object, "model config: moe.");
  // Mirrors of the top-level fields: read here, checked against them by the caller.
  r.read_size("hidden_size", m.hidden_size, 0, kWidthLimit);
  r.read("init_method_std", m.init_method_std);
  r.read_size("num_experts", m.num_experts, 0, kCountLimit);
  r.read_size("moe_ffn_hidden_size", m.moe_ffn_hidden_size, 0, kWidthLimit);
  r.read_size("moe_shared_expert_intermediate_size", m.moe_shared_expert_intermediate_size, 0,
              kWidthLimit);
  r.read("moe_shared_expert_gate", m.moe_shared_expert_gate);
  r.read_size("moe_router_topk", m.moe_router_topk, 0, kCountLimit);
  r.read("moe_router_load_balancing_type", m.moe_router_load_balancing_type,
         parse_load_balancing_type);
  r.read("moe_router_score_function", m.moe_router_score_function, parse_score_function);
  r.read("moe_router_pre_softmax", m.moe_router_pre_softmax);
  r.read_size("moe_router_num_groups", m.moe_router_num_groups, 0, kCountLimit);
  r.read_size("moe_router_group_topk", m.moe_router_group_topk, 0, kCountLimit);
  r.read_size("moe_router_group_score_topk", m.moe_router_group_score_topk, 0, kCountLimit);
  r.read("moe_router_topk_scaling_factor", m.moe_router_topk_scaling_factor);
  r.read("moe_router_enable_expert_bias", m.moe_router_enable_expert_bias);
  r.read("moe_router_bias_update_rate", m.moe_router_bias_update_rate);
  r.read("moe_router_dtype", m.moe_router_dtype, parse_router_dtype);
  r.read("moe_router_force_load_balancing", m.moe_router_force_load_balancing);
  r.read("moe_aux_loss_coeff", m.moe_aux_loss_coeff);
  r.read("moe_z_loss_coeff", m.moe_z_loss_coeff);
  r.read("moe_input_jitter_eps", m.moe_input_jitter_eps);
  r.read("moe_token_dispatcher_type", m.moe_token_dispatcher_type, parse_dispatcher_type);
  r.read("moe_expert_capacity_factor", m.moe_expert_capacity_factor);
  r.read("moe_pad_expert_input_to_capacity", m.moe_pad_expert_input_to_capacity);
  r.read("moe_token_drop_policy", m.moe_token_drop_policy, parse_drop_policy);
  r.read("moe_router_padding_for_fp8", m.moe_router_padding_for_fp8);
  r.read("moe_expert_rank_capacity_factor", m.moe_expert_rank_capacity_factor);
  r.read("moe_grouped_gemm", m.moe_grouped_gemm);
  r.read("moe_grouped_gemm_backend", m.moe_grouped_gemm_backend, ops::parse_grouped_gemm_backend);
  r.read("expert_model_parallel_size", m.expert_model_parallel_size);
  r.read("expert_tensor_parallel_size", m.expert_tensor_parallel_size);
  std::string dtype = dtype_name(m.params_dtype);
  r.read("params_dtype", dtype);
  m.params_dtype = parse_dtype(dtype);
  r.read("seed", m.seed);
  r.finish();
}

void read_mla(const json& object, MlaConfig& m) {
  ObjectReader r(object, "model config: mla.");
  r.read_size("q_lora_rank", m.q_lora_rank, 0, kWidthLimit);
  r.read_size("kv_lora_rank", m.kv_lora_rank, 0, kWidthLimit);
  r.read_size("qk_head_dim", m.qk_head_dim, 0, kWidthLimit);
  r.read_size("qk_pos_emb_head_dim", m.qk_pos_emb_head_dim, 0, kWidthLimit);
  r.read_size("v_head_dim", m.v_head_dim, 0, kWidthLimit);
  r.finish();
}

YarnConfig read_yarn(const json& object) {
  YarnConfig y;
  ObjectReader r(object, "model config: yarn.");
  r.read("factor", y.factor);
  r.read_size("original_max_position_embeddings", y.original_max_position_embeddings, 1,
              kPositionLimit);
  r.read("beta_fast", y.beta_fast);
  r.read("beta_slow", y.beta_slow);
  r.read("mscale", y.mscale);
  r.read("mscale_all_dim", y.mscale_all_dim);
  r.finish();
  return y;
}

}  // namespace

ModelConfig model_config_from_json(const json& object) {
  ModelConfig c;
  ObjectReader r(object, "model config: ");
  r.read("name", c.name);
  r.read("family", c.family);
  // The size fields are checked as they are read (moe_layer_freq below expands num_layers).
  r.read_size("num_layers", c.num_layers, 1, kLayerLimit);
  r.read_size("hidden_size", c.hidden_size, 1, kWidthLimit);
  r.read_size("ffn_hidden_size", c.ffn_hidden_size, 0, kWidthLimit);
  r.read_size("num_attention_heads", c.num_attention_heads, 1, kCountLimit);
  r.read_size("num_query_groups", c.num_query_groups, 0, kCountLimit);
  r.read_size("kv_channels", c.kv_channels, 0, kWidthLimit);
  r.read("qk_layernorm", c.qk_layernorm);
  r.read("add_qkv_bias", c.add_qkv_bias);
  std::string attention = "gqa";
  r.read("attention_type", attention);
  MOE_CHECK(attention == "gqa" || attention == "mla", "model config: attention_type \"", attention,
            "\" is not one of gqa, mla");
  c.attention_type = attention == "mla" ? AttentionType::mla : AttentionType::gqa;
  if (const json* v = r.find("mla")) read_mla(*v, c.mla);
  r.read("norm_epsilon", c.norm_epsilon);
  r.read_size("vocab_size", c.vocab_size, 1, kVocabLimit);
  r.read_size("max_position_embeddings", c.max_position_embeddings, 1, kPositionLimit);
  r.read("rotary_base", c.rotary_base);
  r.read("rotary_percent", c.rotary_percent);
  std::string style = "half";
  r.read("rotary_style", style);
  MOE_CHECK(style == "half" || style == "interleaved", "model config: rotary_style \"", style,
            "\" is not one of half, interleaved");
  c.rotary_style = style == "interleaved" ? RotaryStyle::interleaved : RotaryStyle::half;
  if (const json* v = r.find("yarn"); v && !v->is_null()) c.yarn = read_yarn(*v);
  r.read("untie_embeddings_and_output_weights", c.untie_embeddings_and_output_weights);
  r.read("init_method_std", c.init_method_std);
  r.read("attention_dropout", c.attention_dropout);
  r.read("hidden_dropout", c.hidden_dropout);
  if (const json* v = r.find("moe_layer_freq")) {
    if (v->is_number_integer()) {
      c.moe_layer_pattern = parse_moe_layer_freq(std::to_string(v->get<int64_t>()), c.num_layers);
    } else if (v->is_string()) {
      c.moe_layer_pattern = parse_moe_layer_freq(v->get<std::string>(), c.num_layers);
    } else {
      MOE_CHECK(v->is_array(),
                "model config: moe_layer_freq must be an integer, a list or a "
                "string such as \"([0]*3+[1]*58)\", got ",
                json_excerpt(*v));
      std::string list = "[";
      for (const json& e : *v) {
        MOE_CHECK(e.is_number_integer(),
                  "model config: moe_layer_freq entries must be 0 or 1, got ", json_excerpt(e));
        if (list.size() > 1) list += ',';
        list += std::to_string(e.get<int64_t>());
      }
      c.moe_layer_pattern = parse_moe_layer_freq(list + "]", c.num_layers);
    }
  }
  // The MoE block mirrors hidden_size and init_method_std; a file may repeat them (as
  // model_config_to_json does) but must agree.
  c.moe.hidden_size = c.hidden_size;
  c.moe.init_method_std = c.init_method_std;
  if (const json* v = r.find("moe")) {
    read_moe(*v, c.moe);
    MOE_CHECK(c.moe.hidden_size == c.hidden_size, "model config: moe.hidden_size ",
              c.moe.hidden_size, " differs from hidden_size ", c.hidden_size);
    MOE_CHECK(c.moe.init_method_std == c.init_method_std, "model config: moe.init_method_std ",
              c.moe.init_method_std, " differs from init_method_std ", c.init_method_std);
  }
  r.read_size("mtp_num_layers", c.mtp_num_layers, 0, kLayerLimit);
  r.read("mtp_loss_scaling_factor", c.mtp_loss_scaling_factor);
  r.finish();
  c.validate();
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  const json object = read_json_file(path, "model config");
  try {
    return model_config_from_json(object);
  } catch (const Error& e) {
    MOE_FAIL("model config ", path, ": ", e.what());
  }
}

// ---- writing -------------------------------------------------------------------------------

namespace {

json optional_json(const std::optional<double>& v) {
  return v ? json(*v) : json(nullptr);
}

json moe_to_json(const MoEConfig& m) {
  return json{
      {"hidden_size", m.hidden_size},
      {"init_method_std", m.init_method_std},
      {"num_experts", m.num_experts},
      {"moe_ffn_hidden_size", m.moe_ffn_hidden_size},
      {"moe_shared_expert_intermediate_size", m.moe_shared_expert_intermediate_size},
      {"moe_shared_expert_gate", m.moe_shared_expert_gate},
      {"moe_router_topk", m.moe_router_topk},
      {"moe_router_load_balancing_type", name(m.moe_router_load_balancing_type)},
      {"moe_router_score_function", name(m.moe_router_score_function)},
      {"moe_router_pre_softmax", m.moe_router_pre_softmax},
      {"moe_router_num_groups", m.moe_router_num_groups},
      {"moe_router_group_topk", m.moe_router_group_topk},
      {"moe_router_group_score_topk", m.moe_router_group_score_topk},
      {"moe_router_topk_scaling_factor", optional_json(m.moe_router_topk_scaling_factor)},
      {"moe_router_enable_expert_bias", m.moe_router_enable_expert_bias},
      {"moe_router_bias_update_rate", m.moe_router_bias_update_rate},
      {"moe_router_dtype", name(m.moe_router_dtype)},
      {"moe_router_force_load_balancing", m.moe_router_force_load_balancing},
      {"moe_aux_loss_coeff", m.moe_aux_loss_coeff},
      {"moe_z_loss_coeff", optional_json(m.moe_z_loss_coeff)},
      {"moe_input_jitter_eps", optional_json(m.moe_input_jitter_eps)},
      {"moe_token_dispatcher_type", name(m.moe_token_dispatcher_type)},
      {"moe_expert_capacity_factor", optional_json(m.moe_expert_capacity_factor)},
      {"moe_pad_expert_input_to_capacity", m.moe_pad_expert_input_to_capacity},
      {"moe_token_drop_policy", name(m.moe_token_drop_policy)},
      {"moe_router_padding_for_fp8", m.moe_router_padding_for_fp8},
      {"moe_expert_rank_capacity_factor", optional_json(m.moe_expert_rank_capacity_factor)},
      {"moe_grouped_gemm", m.moe_grouped_gemm},
      {"moe_grouped_gemm_backend", name(m.moe_grouped_gemm_backend)},
      {"expert_model_parallel_size", m.expert_model_parallel_size},
      {"expert_tensor_parallel_size", m.expert_tensor_parallel_size},
      {"params_dtype", dtype_name(m.params_dtype)},
      {"seed", m.seed},
  };
}

}  // namespace

namespace {

// The MoE block as the model uses it: hidden_size and init_method_std mirror the model's
// (moe_config_for_layer takes them from there), whatever the in-memory copy holds.
MoEConfig mirrored_moe(const ModelConfig& c) {
  MoEConfig m = c.moe;
  m.hidden_size = c.hidden_size;
  m.init_method_std = c.init_method_std;
  return m;
}

}  // namespace

json model_config_to_json(const ModelConfig& c) {
  json yarn = nullptr;
  if (c.yarn)
    yarn = json{{"factor", c.yarn->factor},
                {"original_max_position_embeddings", c.yarn->original_max_position_embeddings},
                {"beta_fast", c.yarn->beta_fast},
                {"beta_slow", c.yarn->beta_slow},
                {"mscale", c.yarn->mscale},
                {"mscale_all_dim", c.yarn->mscale_all_dim}};
  json out{
      {"name", c.name},
      {"family", c.family},
      {"num_layers", c.num_layers},
      {"hidden_size", c.hidden_size},
      {"ffn_hidden_size", c.ffn_hidden_size},
      {"num_attention_heads", c.num_attention_heads},
      {"num_query_groups", c.num_query_groups},
      {"kv_channels", c.kv_channels},
      {"qk_layernorm", c.qk_layernorm},
      {"add_qkv_bias", c.add_qkv_bias},
      {"attention_type", c.attention_type == AttentionType::mla ? "mla" : "gqa"},
      {"mla",
       {{"q_lora_rank", c.mla.q_lora_rank},
        {"kv_lora_rank", c.mla.kv_lora_rank},
        {"qk_head_dim", c.mla.qk_head_dim},
        {"qk_pos_emb_head_dim", c.mla.qk_pos_emb_head_dim},
        {"v_head_dim", c.mla.v_head_dim}}},
      {"norm_epsilon", c.norm_epsilon},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rotary_base", c.rotary_base},
      {"rotary_percent", c.rotary_percent},
      {"rotary_style", c.rotary_style == RotaryStyle::interleaved ? "interleaved" : "half"},
      {"yarn", yarn},
      {"untie_embeddings_and_output_weights", c.untie_embeddings_and_output_weights},
      {"init_method_std", c.init_method_std},
      {"attention_dropout", c.attention_dropout},
      {"hidden_dropout", c.hidden_dropout},
      {"moe_layer_freq", format_moe_layer_freq(c.moe_layer_pattern)},
      {"moe", moe_to_json(mirrored_moe(c))},
      {"mtp_num_layers", c.mtp_num_layers},
      {"mtp_loss_scaling_factor", c.mtp_loss_scaling_factor},
  };
  return out;
}

}  // namespace moe::nn
