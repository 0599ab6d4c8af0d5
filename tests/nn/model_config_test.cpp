// ModelConfig: validate() refuses every inconsistent shape with an error naming the flag, the
// JSON format reads back what it writes and refuses unknown keys and wrong types, and
// --moe-layer-freq's forms (integer, list, Megatron's expression) expand as Megatron does.
#include "moe/nn/model_config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "moe/core/error.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"

namespace moe {
namespace {

using nlohmann::json;
using nn::AttentionType;
using nn::ModelConfig;

// Applies `change` to the zoo entry `base` and expects validate() to throw naming `flag`.
void expect_refused(const std::string& base, const std::string& flag,
                    const std::function<void(ModelConfig&)>& change) {
  ModelConfig c = nn::model_zoo(base);
  change(c);
  try {
    c.validate();
    ADD_FAILURE() << "accepted an invalid " << base << " config; expected an error naming " << flag;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
  }
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ModelConfig, ZooEntriesAreValid) {
  for (const std::string& name : nn::model_zoo_names()) {
    SCOPED_TRACE(name);
    EXPECT_NO_THROW(nn::model_zoo(name).validate());
  }
}

TEST(ModelConfig, RefusesInvalidGqaShapes) {
  const std::string gqa = "qwen3-moe-tiny";  // 4 heads, 2 groups, head dim 12, hidden 40
  expect_refused(gqa, "--num-layers", [](ModelConfig& c) { c.num_layers = 0; });
  expect_refused(gqa, "--hidden-size", [](ModelConfig& c) { c.hidden_size = -1; });
  expect_refused(gqa, "--num-attention-heads", [](ModelConfig& c) { c.num_attention_heads = 0; });
  expect_refused(gqa, "--vocab-size", [](ModelConfig& c) { c.vocab_size = 0; });
  expect_refused(gqa, "--num-query-groups", [](ModelConfig& c) { c.num_query_groups = 3; });
  expect_refused(gqa, "--num-query-groups", [](ModelConfig& c) { c.num_query_groups = 8; });
  expect_refused(gqa, "--num-query-groups", [](ModelConfig& c) { c.num_query_groups = 0; });
  // Without --kv-channels the head dim is hidden / heads, which must divide.
  expect_refused(gqa, "--kv-channels", [](ModelConfig& c) {
    c.kv_channels = 0;
    c.hidden_size = 42;
    c.moe.hidden_size = 42;
  });
  expect_refused(gqa, "--kv-channels", [](ModelConfig& c) { c.kv_channels = -4; });
  expect_refused(gqa, "--rotary-percent", [](ModelConfig& c) { c.rotary_percent = 0; });
  expect_refused(gqa, "--rotary-percent", [](ModelConfig& c) { c.rotary_percent = 1.5; });
  // Head dim 12 * 0.25 = 3 rotary features: odd, cannot be rotated in pairs.
  expect_refused(gqa, "--rotary-percent", [](ModelConfig& c) { c.rotary_percent = 0.25; });
  expect_refused(gqa, "--norm-epsilon", [](ModelConfig& c) { c.norm_epsilon = 0; });
  expect_refused(gqa, "--rotary-base", [](ModelConfig& c) { c.rotary_base = -1; });
  expect_refused(gqa, "--init-method-std", [](ModelConfig& c) { c.init_method_std = 0; });
  expect_refused(gqa, "--max-position-embeddings",
                 [](ModelConfig& c) { c.max_position_embeddings = 0; });
  expect_refused(gqa, "--mtp-num-layers", [](ModelConfig& c) { c.mtp_num_layers = -1; });
  expect_refused(gqa, "--mtp-loss-scaling-factor",
                 [](ModelConfig& c) { c.mtp_loss_scaling_factor = -0.1; });
  // A partial rotary that leaves an even number of features is fine: 12 * 0.5 = 6.
  ModelConfig partial = nn::model_zoo(gqa);
  partial.rotary_percent = 0.5;
  EXPECT_NO_THROW(partial.validate());
}

TEST(ModelConfig, RefusesInconsistentLayerPatterns) {
  const std::string base = "qwen2-moe-tiny";  // 4 layers, layer 1 dense
  expect_refused(base, "--moe-layer-freq", [](ModelConfig& c) { c.moe_layer_pattern.pop_back(); });
  expect_refused(base, "--moe-layer-freq",
                 [](ModelConfig& c) { c.moe_layer_pattern.push_back(1); });
  expect_refused(base, "--moe-layer-freq", [](ModelConfig& c) { c.moe_layer_pattern[0] = 2; });
  // A dense layer needs --ffn-hidden-size; an all-MoE model does not.
  expect_refused(base, "--ffn-hidden-size", [](ModelConfig& c) { c.ffn_hidden_size = 0; });
  ModelConfig all_moe = nn::model_zoo("mixtral-tiny");
  all_moe.ffn_hidden_size = 0;
  EXPECT_NO_THROW(all_moe.validate());
  // The MoE block's own rules are applied when a layer is MoE ...
  expect_refused(base, "--moe-router-topk", [](ModelConfig& c) { c.moe.moe_router_topk = 7; });
  expect_refused(base, "--num-experts", [](ModelConfig& c) { c.moe.num_experts = 0; });
  expect_refused(base, "--moe-router-group-topk",
                 [](ModelConfig& c) { c.moe.moe_router_num_groups = 4; });
  expect_refused(base, "--hidden-size", [](ModelConfig& c) { c.moe.hidden_size = 57; });
  // ... and not for a dense model, whose MoE block is never built.
  ModelConfig dense = nn::model_zoo(base);
  dense.moe_layer_pattern.assign(4, 0);
  dense.moe.num_experts = 0;
  EXPECT_NO_THROW(dense.validate());
}

TEST(ModelConfig, RefusesInvalidMlaAndYarn) {
  const std::string mla = "deepseek-v3-tiny";
  expect_refused(mla, "--kv-lora-rank", [](ModelConfig& c) { c.mla.kv_lora_rank = 0; });
  expect_refused(mla, "--q-lora-rank", [](ModelConfig& c) { c.mla.q_lora_rank = -1; });
  expect_refused(mla, "--qk-head-dim", [](ModelConfig& c) { c.mla.qk_head_dim = 0; });
  expect_refused(mla, "--qk-pos-emb-head-dim",
                 [](ModelConfig& c) { c.mla.qk_pos_emb_head_dim = 0; });
  expect_refused(mla, "--qk-pos-emb-head-dim",
                 [](ModelConfig& c) { c.mla.qk_pos_emb_head_dim = 5; });
  expect_refused(mla, "--v-head-dim", [](ModelConfig& c) { c.mla.v_head_dim = 0; });
  expect_refused(mla, "--rotary-percent", [](ModelConfig& c) { c.rotary_percent = 0.5; });
  expect_refused(mla, "--add-qkv-bias", [](ModelConfig& c) { c.add_qkv_bias = true; });
  expect_refused(mla, "--rotary-scaling-factor", [](ModelConfig& c) { c.yarn->factor = 0.5; });
  expect_refused(mla, "--beta-fast", [](ModelConfig& c) { c.yarn->beta_fast = 0.5; });
  expect_refused(mla, "--original-max-position-embeddings",
                 [](ModelConfig& c) { c.yarn->original_max_position_embeddings = 0; });
  expect_refused(mla, "--mscale", [](ModelConfig& c) { c.yarn->mscale = -1; });
  // MLA does not need hidden % heads (DeepSeek-V3-tiny: 70 / 6), nor q compression.
  ModelConfig no_q_lora = nn::model_zoo(mla);
  no_q_lora.mla.q_lora_rank = 0;
  EXPECT_NO_THROW(no_q_lora.validate());
  // The MoE rules hold for DeepSeek's routing too: 4 groups must divide 15 experts.
  expect_refused(mla, "--moe-router-num-groups", [](ModelConfig& c) { c.moe.num_experts = 15; });
}

// ---- --moe-layer-freq ------------------------------------------------------------------------

TEST(ModelConfigJson, MoeLayerFreqForms) {
  using V = std::vector<int>;
  EXPECT_EQ(nn::parse_moe_layer_freq("1", 3), (V{1, 1, 1}));
  EXPECT_EQ(nn::parse_moe_layer_freq("2", 5), (V{1, 0, 1, 0, 1}));  // Megatron: i % N == 0
  EXPECT_EQ(nn::parse_moe_layer_freq("[0,1, 1]", 3), (V{0, 1, 1}));
  EXPECT_EQ(nn::parse_moe_layer_freq("[0]*2+[1]*3", 5), (V{0, 0, 1, 1, 1}));
  EXPECT_EQ(nn::parse_moe_layer_freq("([1,0]*2+[1])", 5), (V{1, 0, 1, 0, 1}));
  const V v3 = nn::parse_moe_layer_freq("([0]*3+[1]*58)", 61);
  ASSERT_EQ(v3.size(), 61u);
  EXPECT_EQ(v3[2], 0);
  EXPECT_EQ(v3[3], 1);
  EXPECT_EQ(v3[60], 1);

  // The shortest form: every N-th layer as "N", else the run-length expression.
  EXPECT_EQ(nn::format_moe_layer_freq(V{1, 1, 1}), "1");
  EXPECT_EQ(nn::format_moe_layer_freq(V{1, 0, 1, 0, 1}), "2");
  EXPECT_EQ(nn::format_moe_layer_freq(v3), "([0]*3+[1]*58)");
  EXPECT_EQ(nn::format_moe_layer_freq(V{1, 0, 1, 1}), "([1]+[0]+[1]*2)");
  for (const V& p : {V{0, 0, 1}, V{1, 0, 0, 1}, V{0}, v3})
    EXPECT_EQ(
        nn::parse_moe_layer_freq(nn::format_moe_layer_freq(p), static_cast<int64_t>(p.size())), p);

  for (const char* bad : {"0", "[2]", "[0]*3+", "([0]*3+[1]*57)", "abc", "[0]*x", "[]", "[0"}) {
    SCOPED_TRACE(bad);
    const std::string error = error_of([&] { nn::parse_moe_layer_freq(bad, 61); });
    EXPECT_NE(error.find("--moe-layer-freq"), std::string::npos) << error;
  }
}

// ---- JSON ------------------------------------------------------------------------------------

TEST(ModelConfigJson, RoundTripsEveryZooEntry) {
  for (const std::string& name : nn::model_zoo_names()) {
    SCOPED_TRACE(name);
    const ModelConfig c = nn::model_zoo(name);
    const json written = nn::model_config_to_json(c);
    EXPECT_EQ(nn::model_config_to_json(nn::model_config_from_json(written)), written);
  }
}

TEST(ModelConfigJson, RoundTripKeepsEveryField) {
  // Change fields the zoo leaves at their defaults: the writer must carry them too.
  ModelConfig c = nn::model_zoo("deepseek-v3-tiny");
  c.moe.moe_z_loss_coeff = 1e-3;
  c.moe.moe_expert_capacity_factor = 1.25;
  c.moe.moe_token_dispatcher_type = nn::DispatcherType::alltoall;
  c.moe.params_dtype = DType::bf16;
  c.moe.seed = 77;
  c.mtp_loss_scaling_factor = 0.3;
  c.untie_embeddings_and_output_weights = false;
  const ModelConfig back = nn::model_config_from_json(nn::model_config_to_json(c));
  EXPECT_EQ(back.moe.moe_z_loss_coeff, 1e-3);
  EXPECT_EQ(back.moe.moe_expert_capacity_factor, 1.25);
  EXPECT_EQ(back.moe.moe_token_dispatcher_type, nn::DispatcherType::alltoall);
  EXPECT_EQ(back.moe.params_dtype, DType::bf16);
  EXPECT_EQ(back.moe.seed, 77u);
  EXPECT_EQ(back.mtp_loss_scaling_factor, 0.3);
  EXPECT_FALSE(back.untie_embeddings_and_output_weights);
  EXPECT_EQ(back.moe_layer_pattern, c.moe_layer_pattern);
  ASSERT_TRUE(back.yarn.has_value());
  EXPECT_EQ(back.yarn->factor, 4.0);
  EXPECT_EQ(back.attention_type, AttentionType::mla);
  EXPECT_EQ(nn::model_config_to_json(back), nn::model_config_to_json(c));
}

TEST(ModelConfigJson, RefusesUnknownKeysAndWrongTypes) {
  const json good = json::parse(nn::model_zoo_json("mixtral-tiny"));
  auto refused = [&](const std::function<void(json&)>& change, const std::string& says) {
    json j = good;
    change(j);
    const std::string error = error_of([&] { nn::model_config_from_json(j); });
    EXPECT_NE(error.find(says), std::string::npos) << error;
  };
  refused([](json& j) { j["num_layer"] = 3; }, "unknown key \"num_layer\"");
  refused([](json& j) { j["moe"]["moe_router_top_k"] = 2; }, "unknown key \"moe_router_top_k\"");
  refused([](json& j) { j["yarn"] = {{"factr", 4.0}}; }, "unknown key \"factr\"");
  refused([](json& j) { j["hidden_size"] = "48"; }, "hidden_size must be an integer");
  refused([](json& j) { j["hidden_size"] = 48.5; }, "hidden_size must be an integer");
  refused([](json& j) { j["qk_layernorm"] = 1; }, "qk_layernorm must be true or false");
  refused([](json& j) { j["attention_type"] = "mha"; }, "attention_type");
  refused([](json& j) { j["rotary_style"] = "gptj"; }, "rotary_style");
  refused([](json& j) { j["moe"]["hidden_size"] = 50; }, "moe.hidden_size");
  refused([](json& j) { j["moe"]["params_dtype"] = "i32"; }, "params_dtype");
  refused([](json& j) { j["moe_layer_freq"] = "[1]*2"; }, "--moe-layer-freq");
  refused([](json& j) { j["moe_layer_freq"] = json::array({1, 1, 2}); }, "--moe-layer-freq");
  refused([](json& j) { j["num_query_groups"] = 4; }, "--num-query-groups");  // validate()d
  // Keys starting with '_' are comments; a list form of the pattern is accepted.
  json commented = good;
  commented["_note"] = "anything";
  commented["moe_layer_freq"] = json::array({1, 1, 1});
  EXPECT_NO_THROW(nn::model_config_from_json(commented));
}

TEST(ModelConfigJson, LoadsFilesAndNamesThePathInErrors) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string path = (dir / "moe_model_config_test.json").string();
  {
    std::ofstream out(path);
    out << nn::model_zoo_json("qwen2-moe-tiny");
  }
  EXPECT_EQ(nn::model_config_to_json(nn::load_model_config(path)),
            nn::model_config_to_json(nn::model_zoo("qwen2-moe-tiny")));
  {
    std::ofstream out(path);
    out << "{\"num_layers\": 2,";
  }
  std::string error = error_of([&] { nn::load_model_config(path); });
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("not valid JSON"), std::string::npos) << error;
  std::remove(path.c_str());
  error = error_of([&] { nn::load_model_config(path); });
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

}  // namespace
}  // namespace moe
