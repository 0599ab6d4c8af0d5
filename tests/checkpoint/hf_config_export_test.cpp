// ModelConfig -> HF config.json: the inverse of nn::from_hf_config for every zoo model, and
// clear errors for models HF cannot express.
#include <gtest/gtest.h>

#include "io/safetensors_testing.h"
#include "moe/checkpoint/hf_config_export.h"
#include "moe/nn/hf_config.h"
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
    const nn::ModelConfig back = nn::from_hf_config(hf, config.name);
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
  c.moe.moe_token_dispatcher_type = "alltoall";
  std::vector<std::string> notes;
  (void)to_hf_config(c, DType::bf16, &notes);
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_NE(notes[0].find("moe.moe_token_dispatcher_type"), std::string::npos) << notes[0];

  c = nn::model_zoo("qwen3-moe-tiny");
  c.rotary_percent = 0.5;
  EXPECT_TRUE(fails_with([&] { to_hf_config(c); }, {"qwen3-moe-tiny", "rotary_percent"}));
  c = nn::model_zoo("mixtral-tiny");
  c.moe.moe_shared_expert_intermediate_size = 16;
  EXPECT_TRUE(fails_with([&] { to_hf_config(c); },
                         {"mixtral", "moe.moe_shared_expert_intermediate_size"}));
  c = nn::model_zoo("deepseek-v2-tiny");
  c.mtp_num_layers = 1;
  EXPECT_TRUE(fails_with([&] { to_hf_config(c); }, {"mtp_num_layers"}));
  c = nn::model_zoo("mixtral-tiny");
  c.family = "llama";
  EXPECT_TRUE(fails_with([&] { to_hf_config(c); }, {"llama", "no Hugging Face config"}));
}

}  // namespace
}  // namespace moe::checkpoint
