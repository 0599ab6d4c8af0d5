// moe train's multi-latent attention and YaRN flags (train_flags_mla.cpp): the flags give the
// DeepSeek presets' MLA fields, Megatron's MLA defaults, and the combinations refused.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"
#include "moe/train/train_args.h"

namespace moe::train {
namespace {

// The model_config.json fields that MLA and YaRN flags set.
nlohmann::json mla_fields(const nn::ModelConfig& m) {
  const nlohmann::json j = nn::model_config_to_json(m);
  nlohmann::json out;
  for (const char* key : {"attention_type", "mla", "rotary_style", "yarn", "kv_channels",
                          "num_query_groups", "rotary_base", "qk_layernorm"})
    out[key] = j.at(key);
  return out;
}

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse_train_args(args);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(TrainArgsMla, FlagsGiveDeepSeekV3sMlaFields) {
  // Megatron's DeepSeek-V3 recipe's attention flags, on the default model.
  const TrainRunConfig r = parse_train_args({"--multi-latent-attention",
                                             "--q-lora-rank",
                                             "1536",
                                             "--kv-lora-rank",
                                             "512",
                                             "--qk-head-dim",
                                             "128",
                                             "--qk-pos-emb-head-dim",
                                             "64",
                                             "--v-head-dim",
                                             "128",
                                             "--rotary-scaling-factor",
                                             "40",
                                             "--mscale",
                                             "1.0",
                                             "--mscale-all-dim",
                                             "1.0",
                                             "--rotary-base",
                                             "10000",
                                             "--qk-layernorm",
                                             "--num-attention-heads",
                                             "128",
                                             "--hidden-size",
                                             "7168",
                                             "--num-layers",
                                             "1",
                                             "--lr",
                                             "1e-4",
                                             "--train-iters",
                                             "0"});
  nn::ModelConfig preset = nn::model_zoo("deepseek-v3");
  EXPECT_EQ(mla_fields(r.model).dump(), mla_fields(preset).dump());
}

TEST(TrainArgsMla, FlagsGiveTheTinyDeepSeekV2) {
  const nn::ModelConfig preset = nn::model_zoo("deepseek-v2-tiny");
  const TrainRunConfig r = parse_train_args({"--multi-latent-attention",
                                             "--q-lora-rank",
                                             "24",
                                             "--kv-lora-rank",
                                             "16",
                                             "--qk-head-dim",
                                             "8",
                                             "--qk-pos-emb-head-dim",
                                             "4",
                                             "--v-head-dim",
                                             "6",
                                             "--rotary-scaling-factor",
                                             "4",
                                             "--mscale",
                                             "0.707",
                                             "--mscale-all-dim",
                                             "0.707",
                                             "--yarn-original-max-position-embeddings",
                                             "128",
                                             "--hidden-size",
                                             "66",
                                             "--num-attention-heads",
                                             "4",
                                             "--lr",
                                             "1e-4",
                                             "--train-iters",
                                             "0"});
  EXPECT_EQ(mla_fields(r.model).dump(), mla_fields(preset).dump());
  // And flags on the preset override its fields.
  const TrainRunConfig o = parse_train_args({"--model", "deepseek-v2-tiny", "--kv-lora-rank", "8",
                                             "--yarn-beta-fast", "16", "--lr", "1e-4"});
  EXPECT_EQ(o.model.mla.kv_lora_rank, 8);
  EXPECT_EQ(o.model.mla.q_lora_rank, 24);
  ASSERT_TRUE(o.model.yarn.has_value());
  EXPECT_DOUBLE_EQ(o.model.yarn->beta_fast, 16.0);
  EXPECT_DOUBLE_EQ(o.model.yarn->factor, 4.0);
}

TEST(TrainArgsMla, MegatronsMlaDefaults) {
  // --multi-latent-attention alone: arguments.py's defaults, plain rope (YaRN at factor 1).
  const TrainRunConfig r = parse_train_args({"--multi-latent-attention", "--lr", "1e-4"});
  const nn::ModelConfig& m = r.model;
  EXPECT_EQ(m.attention_type, nn::AttentionType::mla);
  EXPECT_EQ(m.mla.q_lora_rank, 0);  // --q-lora-rank None
  EXPECT_EQ(m.mla.kv_lora_rank, 32);
  EXPECT_EQ(m.mla.qk_head_dim, 128);
  EXPECT_EQ(m.mla.qk_pos_emb_head_dim, 64);
  EXPECT_EQ(m.mla.v_head_dim, 128);
  EXPECT_EQ(m.rotary_style, nn::RotaryStyle::interleaved);
  EXPECT_EQ(m.num_query_groups, m.num_attention_heads);
  EXPECT_EQ(m.kv_channels, 0);
  EXPECT_FALSE(m.yarn.has_value());
  // A YaRN flag makes the block with Megatron's other defaults.
  const TrainRunConfig y =
      parse_train_args({"--multi-latent-attention", "--rotary-scaling-factor", "8", "--lr", "1"});
  ASSERT_TRUE(y.model.yarn.has_value());
  EXPECT_DOUBLE_EQ(y.model.yarn->factor, 8.0);
  EXPECT_EQ(y.model.yarn->original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(y.model.yarn->beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(y.model.yarn->beta_slow, 1.0);
  EXPECT_DOUBLE_EQ(y.model.yarn->mscale, 1.0);
  EXPECT_DOUBLE_EQ(y.model.yarn->mscale_all_dim, 0.0);
  // --rope-type rope drops a preset's YaRN.
  EXPECT_FALSE(parse_train_args({"--model", "deepseek-v2-tiny", "--rope-type", "rope", "--lr", "1"})
                   .model.yarn.has_value());
  // Grouped-query YaRN through --position-embedding-type yarn.
  const TrainRunConfig g = parse_train_args(
      {"--position-embedding-type", "yarn", "--rotary-scaling-factor", "2", "--lr", "1"});
  EXPECT_EQ(g.model.attention_type, nn::AttentionType::gqa);
  ASSERT_TRUE(g.model.yarn.has_value());
  EXPECT_DOUBLE_EQ(g.model.yarn->factor, 2.0);
}

TEST(TrainArgsMla, RefusedCombinationsNameTheFlags) {
  EXPECT_NE(error_of({"--q-lora-rank", "8", "--lr", "1"}).find("--multi-latent-attention"),
            std::string::npos);
  EXPECT_NE(error_of({"--multi-latent-attention", "--group-query-attention", "--lr", "1"})
                .find("exclude each other"),
            std::string::npos);
  EXPECT_NE(error_of({"--rotary-scaling-factor", "4", "--lr", "1"}).find("--rope-type yarn"),
            std::string::npos);
  EXPECT_NE(error_of({"--multi-latent-attention", "--kv-channels", "16", "--lr", "1"})
                .find("--kv-channels"),
            std::string::npos);
  EXPECT_NE(error_of({"--multi-latent-attention", "--rotary-scaling-factor", "0.5", "--lr", "1"})
                .find("--rotary-scaling-factor"),
            std::string::npos);
  EXPECT_NE(error_of({"--rope-type", "yarn", "--lr", "1"}).find("--position-embedding-type yarn"),
            std::string::npos);
}

}  // namespace
}  // namespace moe::train
