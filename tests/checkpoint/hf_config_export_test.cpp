// ModelConfig -> HF config.json: the inverse of from_hf_config for every zoo model, and
// clear errors for models HF cannot express.
#include "moe/checkpoint/hf_config_export.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/safetensors_testing.h"
#include "moe/checkpoint/hf_config_import.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"

namespace moe::checkpoint {
namespace {

using io::testing::fails_with;

TEST(HfConfigExport, FromHfConfigInvertsItForEveryZooModel) {
  for (const std::string& name : nn::model_zoo_names()) {
    SCOPED_TRACE(name);
    const nn::ModelConfig config = nn::model_zoo(name);
    std::vector<std::string> notes;
    const nlohmann::json hf = to_hf_config(config, DType::bf16, &notes);
    EXPECT_EQ(hf.at("model_type"), config.family);
    EXPECT_EQ(hf.at("torch_dtype"), "bfloat16");
    const nn::ModelConfig back = from_hf_config(hf, config.name);
    EXPECT_EQ(nn::model_config_to_json(back).dump(2), nn::model_config_to_json(config).dump(2));
    EXPECT_TRUE(notes.empty()) << notes.front();
  }
}

TEST(HfConfigExport, PublishedFields) {
  const nlohmann::json v3 = to_hf_config(nn::model_zoo("deepseek-v3"), DType::bf16);
  EXPECT_EQ(v3.at("architectures")[0], "DeepseekV3ForCausalLM");
  EXPECT_EQ(v3.at("first_k_dense_replace"), 3);
  EXPECT_EQ(v3.at("n_routed_experts"), 256);
  EXPECT_EQ(v3.at("n_shared_experts"), 1);
  EXPECT_EQ(v3.at("topk_method"), "noaux_tc");
  EXPECT_EQ(v3.at("num_nextn_predict_layers"), 1);
  EXPECT_EQ(v3.at("q_lora_rank"), 1536);
  const nlohmann::json qwen2 = to_hf_config(nn::model_zoo("qwen2-moe-tiny"), DType::f32);
  EXPECT_EQ(qwen2.at("mlp_only_layers"), nlohmann::json::array({1}));
  EXPECT_EQ(qwen2.at("torch_dtype"), "float32");
  EXPECT_EQ(qwen2.at("norm_topk_prob"), false);
}

TEST(HfConfigExport, TrainingOptionsAreNotesAndArchitectureChangesAreErrors) {
  nn::ModelConfig c = nn::model_zoo("qwen3-moe-tiny");
  c.moe.moe_z_loss_coeff = 1e-3;
  c.moe.moe_token_dispatcher_type = nn::DispatcherType::alltoall;
  std::vector<std::string> notes;
  (void)to_hf_config(c, DType::bf16, &notes);
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_NE(notes[0].find("moe.moe_token_dispatcher_type"), std::string::npos) << notes[0];

  c = nn::model_zoo("qwen3-moe-tiny");
  c.rotary_percent = 0.5;
  EXPECT_TRUE(fails_with([&] { to_hf_config(c); }, {"qwen3-moe-tiny", "rotary_percent"}));
  c = nn::model_zoo("mixtral-tiny");
  c.moe.moe_shared_expert_intermediate_size = 16;
  EXPECT_TRUE(
      fails_with([&] { to_hf_config(c); }, {"mixtral", "moe.moe_shared_expert_intermediate_size"}));
  c = nn::model_zoo("deepseek-v2-tiny");
  c.mtp_num_layers = 1;
  EXPECT_TRUE(fails_with([&] { to_hf_config(c); }, {"mtp_num_layers"}));
  c = nn::model_zoo("mixtral-tiny");
  c.family = "llama";
  EXPECT_TRUE(fails_with([&] { to_hf_config(c); }, {"llama", "no Hugging Face config"}));
}

// attention_dropout is a field of every one of these HF configuration classes: the model's
// attention dropout is written there and read back (as a config.json file too); the hidden
// dropout, which HF has no field for, is a note.
class HfConfigDropout : public io::testing::ScratchFolder {};

TEST_F(HfConfigDropout, AttentionDropoutRoundTripsAndHiddenDropoutIsANote) {
  for (const char* name : {"mixtral-tiny", "qwen2-moe-tiny", "qwen3-moe-tiny", "deepseek-v2-tiny",
                           "deepseek-v3-tiny"}) {
    SCOPED_TRACE(name);
    nn::ModelConfig c = nn::model_zoo(name);
    c.attention_dropout = 0.15;
    c.hidden_dropout = 0.2;
    std::vector<std::string> notes;
    const nlohmann::json hf = to_hf_config(c, DType::bf16, &notes);
    EXPECT_EQ(hf.at("attention_dropout"), 0.15);
    EXPECT_FALSE(hf.contains("hidden_dropout"));
    ASSERT_EQ(notes.size(), 1u);
    EXPECT_NE(notes[0].find("hidden_dropout"), std::string::npos) << notes[0];
    EXPECT_EQ(from_hf_config(hf, name).attention_dropout, 0.15);

    const std::filesystem::path folder = path(name);
    std::filesystem::create_directories(folder);
    std::ofstream(folder / "config.json") << hf.dump(2);
    const nn::ModelConfig back = from_hf_config_file(folder.string());
    EXPECT_EQ(back.attention_dropout, 0.15);
    EXPECT_EQ(back.hidden_dropout, 0.0);  // HF has none: no dropout there
    c.hidden_dropout = 0.0;
    c.name = back.name;
    EXPECT_EQ(nn::model_config_to_json(back).dump(2), nn::model_config_to_json(c).dump(2));
  }
  // Absent (or null): transformers' default 0.0; out of [0, 1] or not a number: an error.
  nlohmann::json hf = to_hf_config(nn::model_zoo("mixtral-tiny"));
  hf.erase("attention_dropout");
  EXPECT_EQ(from_hf_config(hf).attention_dropout, 0.0);
  hf["attention_dropout"] = 1.5;
  EXPECT_TRUE(fails_with([&] { from_hf_config(hf); }, {"attention-dropout"}));
  hf["attention_dropout"] = "0.1";
  EXPECT_TRUE(fails_with([&] { from_hf_config(hf); }, {"attention_dropout", "number"}));
}

}  // namespace
}  // namespace moe::checkpoint
