// Hugging Face config.json -> ModelConfig: each family's rules (layer placement, routing in
// Megatron's terms, shared experts, MLA, YaRN, MTP) and clear errors for what cannot be mapped.
// The whole published configs are checked against the zoo in model_zoo_test.cpp.
#include "moe/checkpoint/hf_config_import.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "moe/core/error.h"
#include "moe/nn/model_config_json.h"
#include "nn/hf_config_texts.h"

namespace moe {
namespace {

using checkpoint::from_hf_config;
using nlohmann::json;
using nn::ModelConfig;

json hf(const std::string& zoo_name) {
  return test::hf_config_json(zoo_name);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_error(const json& config, const std::string& says) {
  const std::string error = error_of([&] { from_hf_config(config); });
  EXPECT_NE(error.find(says), std::string::npos) << error;
}

TEST(HfConfig, MixtralRoutingIsRenormalisedSoftmaxTopK) {
  const ModelConfig c = from_hf_config(hf("mixtral-8x7b"), "m");
  EXPECT_EQ(c.name, "m");
  EXPECT_EQ(c.family, "mixtral");
  EXPECT_EQ(c.moe.moe_router_score_function, ops::ScoreFunction::softmax);
  EXPECT_FALSE(c.moe.moe_router_pre_softmax);  // renormalised == softmax over the k logits
  EXPECT_EQ(c.moe.moe_router_topk, 2);
  EXPECT_EQ(c.moe.moe_ffn_hidden_size, 14336);
  EXPECT_EQ(c.moe.moe_shared_expert_intermediate_size, 0);
  EXPECT_EQ(c.moe.moe_aux_loss_coeff, 0.02);
  EXPECT_FALSE(c.moe.moe_input_jitter_eps.has_value());
  EXPECT_EQ(c.head_dim(), 128);
  EXPECT_EQ(c.moe_layer_pattern, std::vector<int>(32, 1));
  // Jitter noise maps onto --moe-input-jitter-eps.
  json j = hf("mixtral-8x7b");
  j["router_jitter_noise"] = 0.01;
  EXPECT_EQ(from_hf_config(j).moe.moe_input_jitter_eps, 0.01);
}

TEST(HfConfig, Qwen2MoeSharedExpertGateAndNoRenormalisation) {
  const ModelConfig c = from_hf_config(hf("qwen2-57b-a14b"));
  EXPECT_TRUE(c.add_qkv_bias);
  EXPECT_FALSE(c.qk_layernorm);
  EXPECT_EQ(c.moe.moe_shared_expert_intermediate_size, 20480);
  EXPECT_TRUE(c.moe.moe_shared_expert_gate);
  EXPECT_TRUE(c.moe.moe_router_pre_softmax);  // norm_topk_prob false
  json j = hf("qwen2-57b-a14b");
  j["norm_topk_prob"] = true;
  EXPECT_FALSE(from_hf_config(j).moe.moe_router_pre_softmax);
  j.erase("norm_topk_prob");  // transformers' default: False
  EXPECT_TRUE(from_hf_config(j).moe.moe_router_pre_softmax);
}

TEST(HfConfig, QwenLayerPlacementFollowsSparseStepAndMlpOnlyLayers) {
  json j = hf("qwen2-moe-tiny");  // 4 layers
  j["mlp_only_layers"] = json::array({0});
  j["decoder_sparse_step"] = 2;
  // Sparse iff not in mlp_only_layers and (i + 1) % 2 == 0: layers 1 and 3.
  EXPECT_EQ(from_hf_config(j).moe_layer_pattern, (std::vector<int>{0, 1, 0, 1}));
  j["mlp_only_layers"] = json::array({3});
  j["decoder_sparse_step"] = 1;
  EXPECT_EQ(from_hf_config(j).moe_layer_pattern, (std::vector<int>{1, 1, 1, 0}));
  j["mlp_only_layers"] = json::array({4});
  expect_error(j, "mlp_only_layers");
  j["mlp_only_layers"] = json::array();
  j["decoder_sparse_step"] = 0;
  expect_error(j, "decoder_sparse_step");
}

TEST(HfConfig, Qwen3MoeHeadDimAndQkNorm) {
  const ModelConfig c = from_hf_config(hf("qwen3-30b-a3b"));
  EXPECT_EQ(c.kv_channels, 128);  // head_dim, not hidden / heads = 64
  EXPECT_TRUE(c.qk_layernorm);
  EXPECT_FALSE(c.add_qkv_bias);
  EXPECT_EQ(c.moe.moe_shared_expert_intermediate_size, 0);
  EXPECT_FALSE(c.moe.moe_router_pre_softmax);  // norm_topk_prob true
  json j = hf("qwen3-30b-a3b");
  j.erase("head_dim");
  EXPECT_EQ(from_hf_config(j).kv_channels, 64);
  j["attention_bias"] = true;
  expect_error(j, "attention_bias");
}

TEST(HfConfig, DeepSeekV2Routing) {
  const ModelConfig c = from_hf_config(hf("deepseek-v2"));
  EXPECT_EQ(c.attention_type, nn::AttentionType::mla);
  EXPECT_EQ(c.rotary_style, nn::RotaryStyle::interleaved);
  EXPECT_TRUE(c.qk_layernorm);
  EXPECT_EQ(c.moe.moe_router_score_function, ops::ScoreFunction::softmax);
  EXPECT_TRUE(c.moe.moe_router_pre_softmax);
  EXPECT_EQ(c.moe.moe_router_num_groups, 8);
  EXPECT_EQ(c.moe.moe_router_group_topk, 3);
  EXPECT_EQ(c.moe.moe_router_topk_scaling_factor, 16.0);
  EXPECT_FALSE(c.moe.moe_router_enable_expert_bias);
  EXPECT_EQ(c.moe.moe_shared_expert_intermediate_size, 2 * 1536);
  EXPECT_EQ(c.moe.moe_router_load_balancing_type, nn::LoadBalancingType::seq_aux_loss);
  EXPECT_EQ(c.moe_layer_pattern[0], 0);
  EXPECT_EQ(c.moe_layer_pattern[1], 1);
  EXPECT_EQ(c.mtp_num_layers, 0);
  ASSERT_TRUE(c.yarn.has_value());
  EXPECT_EQ(c.yarn->mscale, 0.707);

  json j = hf("deepseek-v2");
  // V2's gate scales only when it does not renormalise.
  j["norm_topk_prob"] = true;
  ModelConfig renormalised = from_hf_config(j);
  EXPECT_FALSE(renormalised.moe.moe_router_pre_softmax);
  EXPECT_FALSE(renormalised.moe.moe_router_topk_scaling_factor.has_value());
  // greedy: no groups (DeepSeek-V2-Lite), q_lora_rank null: no q compression.
  j = hf("deepseek-v2");
  j["topk_method"] = "greedy";
  j["q_lora_rank"] = nullptr;
  ModelConfig lite = from_hf_config(j);
  EXPECT_EQ(lite.moe.moe_router_num_groups, 0);
  EXPECT_EQ(lite.mla.q_lora_rank, 0);
  j["seq_aux"] = false;
  EXPECT_EQ(from_hf_config(j).moe.moe_router_load_balancing_type, nn::LoadBalancingType::aux_loss);
  j["moe_layer_freq"] = 2;  // MoE iff i >= 1 and i % 2 == 0
  const ModelConfig every_other = from_hf_config(j);
  EXPECT_EQ(every_other.moe_layer_pattern[1], 0);
  EXPECT_EQ(every_other.moe_layer_pattern[2], 1);
  EXPECT_EQ(every_other.moe_layer_pattern[3], 0);
}

TEST(HfConfig, DeepSeekV3SigmoidGroupsBiasMtp) {
  const ModelConfig c = from_hf_config(hf("deepseek-v3"));
  EXPECT_EQ(c.moe.moe_router_score_function, ops::ScoreFunction::sigmoid);
  EXPECT_FALSE(c.moe.moe_router_pre_softmax);
  EXPECT_TRUE(c.moe.moe_router_enable_expert_bias);
  EXPECT_EQ(c.moe.moe_router_num_groups, 8);
  EXPECT_EQ(c.moe.moe_router_group_topk, 4);
  EXPECT_EQ(c.moe.moe_router_topk, 8);
  EXPECT_EQ(c.moe.moe_router_topk_scaling_factor, 2.5);
  EXPECT_EQ(c.moe.moe_shared_expert_intermediate_size, 2048);
  EXPECT_FALSE(c.moe.moe_shared_expert_gate);
  EXPECT_EQ(c.mtp_num_layers, 1);
  EXPECT_EQ(c.moe_layer_pattern, [] {
    std::vector<int> p(61, 1);
    p[0] = p[1] = p[2] = 0;
    return p;
  }());
  ASSERT_TRUE(c.yarn.has_value());
  EXPECT_EQ(c.yarn->factor, 40.0);
  EXPECT_EQ(c.yarn->original_max_position_embeddings, 4096);
  EXPECT_EQ(c.mla.q_lora_rank, 1536);
  EXPECT_EQ(c.mla.kv_lora_rank, 512);
  EXPECT_EQ(c.mla.qk_head_dim, 128);
  EXPECT_EQ(c.mla.qk_pos_emb_head_dim, 64);
  EXPECT_EQ(c.mla.v_head_dim, 128);

  json j = hf("deepseek-v3");
  j["norm_topk_prob"] = false;  // sigmoid top-k is always renormalised in Megatron
  expect_error(j, "norm_topk_prob");
  j = hf("deepseek-v3");
  j["n_group"] = 1;  // one group: no group-limited routing
  EXPECT_EQ(from_hf_config(j).moe.moe_router_num_groups, 0);
  j = hf("deepseek-v3");
  j["routed_scaling_factor"] = 1.0;
  EXPECT_FALSE(from_hf_config(j).moe.moe_router_topk_scaling_factor.has_value());
  // transformers' DeepseekV3Config defaults: sigmoid, noaux_tc, 3 dense layers.
  j = hf("deepseek-v3");
  for (const char* key : {"scoring_func", "topk_method", "first_k_dense_replace", "norm_topk_prob"})
    j.erase(key);
  EXPECT_EQ(nn::model_config_to_json(from_hf_config(j)), nn::model_config_to_json(c));
}

TEST(HfConfig, YarnAndOtherRopeScalings) {
  json j = hf("qwen3-moe-tiny");
  j["rope_scaling"] = {
      {"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 128}};
  const ModelConfig c = from_hf_config(j);
  ASSERT_TRUE(c.yarn.has_value());
  EXPECT_EQ(c.yarn->factor, 4.0);
  EXPECT_EQ(c.yarn->beta_fast, 32.0);
  EXPECT_EQ(c.yarn->mscale_all_dim, 0.0);
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_error(j, "rope_scaling type \"linear\"");
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_FALSE(from_hf_config(j).yarn.has_value());
  // transformers 5 moved rope_theta into rope_parameters.
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5000000.0}};
  EXPECT_EQ(from_hf_config(j).rotary_base, 5000000.0);
}

TEST(HfConfig, ClearErrors) {
  expect_error(json::array(), "JSON object");
  expect_error(json{{"hidden_size", 8}}, "model_type");
  json llama = hf("mixtral-tiny");
  llama["model_type"] = "llama";
  expect_error(llama, "model_type \"llama\" is not supported");
  for (const char* key : {"hidden_size", "num_hidden_layers", "vocab_size", "num_local_experts",
                          "num_experts_per_tok", "intermediate_size", "num_attention_heads"}) {
    SCOPED_TRACE(key);
    json j = hf("mixtral-tiny");
    j.erase(key);
    const std::string error = error_of([&] { from_hf_config(j); });
    EXPECT_NE(error.find(std::string("lacks the required field \"") + key + "\""),
              std::string::npos)
        << error;
    EXPECT_NE(error.find("mixtral"), std::string::npos) << error;
  }
  for (const char* key : {"kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                          "moe_intermediate_size", "topk_group"}) {
    SCOPED_TRACE(key);
    json j = hf("deepseek-v3-tiny");
    j.erase(key);
    expect_error(j, std::string("\"") + key + "\"");
  }
  json j = hf("qwen2-moe-tiny");
  j.erase("shared_expert_intermediate_size");
  expect_error(j, "shared_expert_intermediate_size");
  j = hf("mixtral-tiny");
  j["hidden_size"] = "48";
  expect_error(j, "\"hidden_size\" must be an integer");
  j = hf("mixtral-tiny");
  j["hidden_act"] = "gelu";
  expect_error(j, "hidden_act");
  j = hf("mixtral-tiny");
  j["sliding_window"] = 64;  // < max_position_embeddings 256
  expect_error(j, "sliding_window");
  j = hf("mixtral-tiny");
  j["num_key_value_heads"] = 4;  // 6 heads: not divisible, refused by validate()
  expect_error(j, "--num-query-groups");
  j = hf("deepseek-v3-tiny");
  j["topk_method"] = "topk";
  expect_error(j, "topk_method");
  j = hf("deepseek-v3-tiny");
  j["scoring_func"] = "sqrtsoftplus";
  expect_error(j, "scoring_func");
  j = hf("deepseek-v3-tiny");
  j["attention_bias"] = true;
  expect_error(j, "attention_bias");
}

TEST(HfConfig, ReadsFilesAndFolders) {
  namespace fs = std::filesystem;
  const fs::path folder = fs::temp_directory_path() / "Tiny-Mixtral-hf-test";
  fs::create_directories(folder);
  {
    std::ofstream out(folder / "config.json");
    out << hf("mixtral-tiny").dump(2);
  }
  EXPECT_EQ(checkpoint::from_hf_config_file(folder.string()).name, "Tiny-Mixtral-hf-test");
  EXPECT_EQ(checkpoint::from_hf_config_file((folder / "config.json").string()).num_layers, 3);
  {
    std::ofstream out(folder / "config.json");
    out << "{";
  }
  const std::string error = error_of([&] { checkpoint::from_hf_config_file(folder.string()); });
  EXPECT_NE(error.find("config.json"), std::string::npos) << error;
  fs::remove_all(folder);
  EXPECT_NE(error_of([&] { checkpoint::from_hf_config_file(folder.string()); }).find("cannot open"),
            std::string::npos);
}

}  // namespace
}  // namespace moe
