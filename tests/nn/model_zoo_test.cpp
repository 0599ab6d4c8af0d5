// The model zoo: the embedded texts are configs/*.json, every published entry is exactly what
// from_hf_config() makes of the model's Hugging Face config.json, and each tiny variant keeps
// its family's structure at a size a test can run.
#include "moe/nn/model_zoo.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "common/check.h"
#include "moe/checkpoint/hf_config_import.h"
#include "moe/core/error.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/param_count.h"
#include "nn/hf_config_texts.h"

namespace moe {
namespace {

using nlohmann::json;
using nn::ModelConfig;

const std::vector<std::string> kPublished{"mixtral-8x7b",  "mixtral-8x22b",   "qwen2-57b-a14b",
                                          "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v2",
                                          "deepseek-v3"};
const std::vector<std::string> kTiny{"mixtral-tiny", "qwen2-moe-tiny", "qwen3-moe-tiny",
                                     "deepseek-v2-tiny", "deepseek-v3-tiny"};

std::filesystem::path configs_dir() {
  // This file is tests/nn/model_zoo_test.cpp; the configs are in <repo>/configs. A compiler
  // cache (ccache's base_dir) makes __FILE__ relative to the build folder, which ctest does not
  // run in: then <repo> is found from the fixtures' folder, <repo>/tests/fixtures.
  const auto from_file =
      std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "configs";
  if (std::filesystem::is_directory(from_file)) return from_file;
  return std::filesystem::path(test::fixture_path("hf")).parent_path().parent_path().parent_path() /
         "configs";
}

TEST(ModelZoo, NamesPublishedModelsThenTinyOnes) {
  std::vector<std::string> expected = kPublished;
  expected.insert(expected.end(), kTiny.begin(), kTiny.end());
  EXPECT_EQ(nn::model_zoo_names(), expected);
  for (const std::string& name : expected) EXPECT_EQ(nn::model_zoo(name).name, name);
}

TEST(ModelZoo, UnknownNameListsTheZoo) {
  try {
    nn::model_zoo("mixtral-8x8b");
    ADD_FAILURE() << "accepted an unknown name";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("\"mixtral-8x8b\" is not in the model zoo"), std::string::npos) << what;
    EXPECT_NE(what.find("deepseek-v3-tiny"), std::string::npos) << what;
  }
}

TEST(ModelZoo, EmbeddedTextsMatchConfigFiles) {
  const auto dir = configs_dir();
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  std::set<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".json") files.insert(entry.path().stem().string());
  const std::vector<std::string> names = nn::model_zoo_names();
  EXPECT_EQ(files, std::set<std::string>(names.begin(), names.end()))
      << "configs/ and the embedded zoo differ: run configs/embed_configs.py";
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    std::ifstream in(dir / (name + ".json"));
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_EQ(json::parse(text.str()), json::parse(nn::model_zoo_json(name)))
        << "configs/" << name << ".json differs from the embedded copy: run "
        << "configs/embed_configs.py";
    EXPECT_EQ(nn::model_config_to_json(nn::load_model_config((dir / (name + ".json")).string())),
              nn::model_config_to_json(nn::model_zoo(name)));
  }
}

TEST(ModelZoo, EntriesEqualTheirHuggingFaceConfigs) {
  ASSERT_EQ(test::hf_config_texts().size(), kPublished.size() + kTiny.size());
  for (const test::HfConfigText& t : test::hf_config_texts()) {
    SCOPED_TRACE(t.zoo_name);
    const json from_hf =
        nn::model_config_to_json(checkpoint::from_hf_config(json::parse(t.json), t.zoo_name));
    const json zoo = nn::model_config_to_json(nn::model_zoo(t.zoo_name));
    EXPECT_EQ(zoo, from_hf) << "differences (zoo -> from_hf): " << json::diff(zoo, from_hf).dump();
  }
}

// The published hyperparameters, restated from the model cards / papers (a second source next
// to the config.json texts): layers, hidden, experts, top-k, expert FFN, shared FFN.
TEST(ModelZoo, PublishedHyperparameters) {
  struct Row {
    const char* name;
    int64_t layers, hidden, experts, topk, expert_ffn, shared_ffn, dense_layers, mtp;
  };
  const Row rows[] = {
      {"mixtral-8x7b", 32, 4096, 8, 2, 14336, 0, 0, 0},
      {"mixtral-8x22b", 56, 6144, 8, 2, 16384, 0, 0, 0},
      {"qwen2-57b-a14b", 28, 3584, 64, 8, 2560, 20480, 0, 0},
      {"qwen3-30b-a3b", 48, 2048, 128, 8, 768, 0, 0, 0},
      {"qwen3-235b-a22b", 94, 4096, 128, 8, 1536, 0, 0, 0},
      {"deepseek-v2", 60, 5120, 160, 6, 1536, 3072, 1, 0},
      {"deepseek-v3", 61, 7168, 256, 8, 2048, 2048, 3, 1},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.name);
    const ModelConfig c = nn::model_zoo(r.name);
    EXPECT_EQ(c.num_layers, r.layers);
    EXPECT_EQ(c.hidden_size, r.hidden);
    EXPECT_EQ(c.moe.num_experts, r.experts);
    EXPECT_EQ(c.moe.moe_router_topk, r.topk);
    EXPECT_EQ(c.moe.moe_ffn_hidden_size, r.expert_ffn);
    EXPECT_EQ(c.moe.moe_shared_expert_intermediate_size, r.shared_ffn);
    int64_t dense = 0;
    for (int64_t i = 0; i < c.num_layers; ++i) dense += c.is_moe_layer(i) ? 0 : 1;
    EXPECT_EQ(dense, r.dense_layers);
    for (int64_t i = 0; i < r.dense_layers; ++i) EXPECT_FALSE(c.is_moe_layer(i)) << i;
    EXPECT_EQ(c.mtp_num_layers, r.mtp);
  }
  // DeepSeek-V3's router: sigmoid, expert bias, 8 groups / top-4 groups, scaling 2.5; YaRN 40.
  const ModelConfig v3 = nn::model_zoo("deepseek-v3");
  EXPECT_EQ(v3.moe.moe_router_score_function, ops::ScoreFunction::sigmoid);
  EXPECT_TRUE(v3.moe.moe_router_enable_expert_bias);
  EXPECT_EQ(v3.moe.moe_router_num_groups, 8);
  EXPECT_EQ(v3.moe.moe_router_group_topk, 4);
  EXPECT_EQ(v3.moe.moe_router_topk_scaling_factor, 2.5);
  EXPECT_EQ(v3.yarn->factor, 40.0);
  EXPECT_EQ(v3.mla.q_lora_rank, 1536);
  EXPECT_EQ(v3.mla.kv_lora_rank, 512);
}

// Each tiny model keeps the structure of its family's published model: attention kind, biases,
// norms, rotary style, shared expert and gate, routing rule, groups, bias, scaling, YaRN, MTP,
// leading dense layers.
TEST(ModelZoo, TinyVariantsKeepTheirFamilyStructure) {
  const std::pair<const char*, const char*> pairs[] = {{"mixtral-tiny", "mixtral-8x7b"},
                                                       {"qwen2-moe-tiny", "qwen2-57b-a14b"},
                                                       {"qwen3-moe-tiny", "qwen3-30b-a3b"},
                                                       {"deepseek-v2-tiny", "deepseek-v2"},
                                                       {"deepseek-v3-tiny", "deepseek-v3"}};
  for (const auto& [tiny_name, full_name] : pairs) {
    SCOPED_TRACE(tiny_name);
    const ModelConfig tiny = nn::model_zoo(tiny_name), full = nn::model_zoo(full_name);
    EXPECT_EQ(tiny.family, full.family);
    EXPECT_EQ(tiny.attention_type, full.attention_type);
    EXPECT_EQ(tiny.qk_layernorm, full.qk_layernorm);
    EXPECT_EQ(tiny.add_qkv_bias, full.add_qkv_bias);
    EXPECT_EQ(tiny.rotary_style, full.rotary_style);
    EXPECT_EQ(tiny.yarn.has_value(), full.yarn.has_value());
    EXPECT_EQ(tiny.untie_embeddings_and_output_weights, full.untie_embeddings_and_output_weights);
    EXPECT_EQ(tiny.num_query_groups < tiny.num_attention_heads,
              full.num_query_groups < full.num_attention_heads);  // GQA stays GQA
    EXPECT_EQ(tiny.head_dim() != tiny.hidden_size / tiny.num_attention_heads,
              full.head_dim() != full.hidden_size / full.num_attention_heads);  // Qwen3's head_dim
    EXPECT_EQ(tiny.mla.q_lora_rank > 0, full.mla.q_lora_rank > 0);
    const nn::MoEConfig &t = tiny.moe, &f = full.moe;
    EXPECT_EQ(t.moe_shared_expert_intermediate_size > 0, f.moe_shared_expert_intermediate_size > 0);
    if (tiny.family.starts_with("deepseek")) {  // n_shared_experts * moe_intermediate_size
      EXPECT_EQ(t.moe_shared_expert_intermediate_size / t.moe_ffn_hidden_size,
                f.moe_shared_expert_intermediate_size / f.moe_ffn_hidden_size);
    }
    EXPECT_EQ(t.moe_shared_expert_gate, f.moe_shared_expert_gate);
    EXPECT_EQ(t.moe_router_score_function, f.moe_router_score_function);
    EXPECT_EQ(t.moe_router_pre_softmax, f.moe_router_pre_softmax);
    EXPECT_EQ(t.moe_router_num_groups > 0, f.moe_router_num_groups > 0);
    EXPECT_EQ(t.moe_router_enable_expert_bias, f.moe_router_enable_expert_bias);
    EXPECT_EQ(t.moe_router_topk_scaling_factor, f.moe_router_topk_scaling_factor);
    EXPECT_EQ(t.moe_router_load_balancing_type, f.moe_router_load_balancing_type);
    EXPECT_EQ(tiny.mtp_num_layers > 0, full.mtp_num_layers > 0);
    EXPECT_EQ(tiny.is_moe_layer(0), full.is_moe_layer(0));  // leading dense layers
    // Small enough for CPU tests: a few layers, under a million parameters, odd sizes.
    EXPECT_LE(tiny.num_layers, 5);
    EXPECT_LT(nn::count_parameters(tiny).total(), 1'000'000);
    EXPECT_EQ(tiny.vocab_size % 2, 1);
  }
}

}  // namespace
}  // namespace moe
