// Parameter counting: the counts equal a sum over the tensors a Hugging Face checkpoint of each
// model holds (listed here by name and shape, the layout modules and converters follow), and
// round to the totals and active counts the model publishers give.
#include "moe/nn/param_count.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "moe/nn/model_zoo.h"

namespace moe {
namespace {

using nn::ModelConfig;

// The tensors of a Hugging Face checkpoint of `c`, as {name: element count}, with HF's module
// names (modeling_mixtral / qwen2_moe / qwen3_moe / deepseek_v2 / deepseek_v3).
std::map<std::string, int64_t> hf_tensors(const ModelConfig& c) {
  std::map<std::string, int64_t> t;
  const int64_t H = c.hidden_size, V = c.vocab_size, heads = c.num_attention_heads;
  const bool deepseek = c.family.starts_with("deepseek");
  const bool mixtral = c.family == "mixtral";
  auto layer = [&](const std::string& p, bool moe) {
    t[p + "input_layernorm.weight"] = H;
    t[p + "post_attention_layernorm.weight"] = H;
    const std::string a = p + "self_attn.";
    if (c.attention_type == nn::AttentionType::gqa) {
      const int64_t D = c.head_dim(), kv = c.num_query_groups;
      t[a + "q_proj.weight"] = heads * D * H;
      t[a + "k_proj.weight"] = kv * D * H;
      t[a + "v_proj.weight"] = kv * D * H;
      t[a + "o_proj.weight"] = H * heads * D;
      if (c.add_qkv_bias) {
        t[a + "q_proj.bias"] = heads * D;
        t[a + "k_proj.bias"] = kv * D;
        t[a + "v_proj.bias"] = kv * D;
      }
      if (c.qk_layernorm) {
        t[a + "q_norm.weight"] = D;
        t[a + "k_norm.weight"] = D;
      }
    } else {
      const nn::MlaConfig& m = c.mla;
      const int64_t qk = m.qk_head_dim + m.qk_pos_emb_head_dim;
      if (m.q_lora_rank > 0) {
        t[a + "q_a_proj.weight"] = m.q_lora_rank * H;
        t[a + "q_a_layernorm.weight"] = m.q_lora_rank;
        t[a + "q_b_proj.weight"] = heads * qk * m.q_lora_rank;
      } else {
        t[a + "q_proj.weight"] = heads * qk * H;
      }
      t[a + "kv_a_proj_with_mqa.weight"] = (m.kv_lora_rank + m.qk_pos_emb_head_dim) * H;
      t[a + "kv_a_layernorm.weight"] = m.kv_lora_rank;
      t[a + "kv_b_proj.weight"] = heads * (m.qk_head_dim + m.v_head_dim) * m.kv_lora_rank;
      t[a + "o_proj.weight"] = H * heads * m.v_head_dim;
    }
    auto swiglu = [&](const std::string& q, int64_t F, bool w123) {
      t[q + (w123 ? "w1.weight" : "gate_proj.weight")] = F * H;
      t[q + (w123 ? "w3.weight" : "up_proj.weight")] = F * H;
      t[q + (w123 ? "w2.weight" : "down_proj.weight")] = H * F;
    };
    if (!moe) {
      swiglu(p + "mlp.", c.ffn_hidden_size, false);
      return;
    }
    const nn::MoEConfig& m = c.moe;
    const std::string b = p + (mixtral ? "block_sparse_moe." : "mlp.");
    t[b + "gate.weight"] = m.num_experts * H;
    for (int64_t e = 0; e < m.num_experts; ++e)
      swiglu(b + "experts." + std::to_string(e) + ".", m.moe_ffn_hidden_size, mixtral);
    if (m.moe_shared_expert_intermediate_size > 0)
      swiglu(b + (deepseek ? "shared_experts." : "shared_expert."),
             m.moe_shared_expert_intermediate_size, false);
    if (m.moe_shared_expert_gate) t[b + "shared_expert_gate.weight"] = H;
    if (m.moe_router_enable_expert_bias) t[b + "gate.e_score_correction_bias"] = m.num_experts;
  };
  t["model.embed_tokens.weight"] = V * H;
  for (int64_t i = 0; i < c.num_layers; ++i)
    layer("model.layers." + std::to_string(i) + ".", c.is_moe_layer(i));
  t["model.norm.weight"] = H;
  if (c.untie_embeddings_and_output_weights) t["lm_head.weight"] = V * H;
  // DeepSeek-V3's MTP modules are stored as layers num_layers, num_layers + 1, ...
  for (int64_t i = 0; i < c.mtp_num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(c.num_layers + i) + ".";
    t[p + "enorm.weight"] = H;
    t[p + "hnorm.weight"] = H;
    t[p + "eh_proj.weight"] = H * 2 * H;
    t[p + "shared_head.norm.weight"] = H;
    t[p + "embed_tokens.weight"] = V * H;  // copies of the main model's (MTP_COPY)
    t[p + "shared_head.head.weight"] = V * H;
    layer(p, c.is_moe_layer(c.num_layers - 1));
  }
  return t;
}

struct Sums {
  int64_t main = 0, mtp = 0, copies = 0, buffers = 0, routed_per_layer_expert = 0;
};

Sums sum(const ModelConfig& c) {
  Sums s;
  for (const auto& [name, n] : hf_tensors(c)) {
    const bool mtp = c.mtp_num_layers > 0 && name.starts_with("model.layers.") &&
                     std::stoll(name.substr(13)) >= c.num_layers;
    if (name.ends_with("e_score_correction_bias"))
      s.buffers += n;
    else if (mtp &&
             (name.ends_with("embed_tokens.weight") || name.ends_with("shared_head.head.weight")))
      s.copies += n;
    else
      (mtp ? s.mtp : s.main) += n;
  }
  return s;
}

TEST(ParamCount, EqualsTheSumOverCheckpointTensors) {
  for (const std::string& name : nn::model_zoo_names()) {
    SCOPED_TRACE(name);
    const ModelConfig c = nn::model_zoo(name);
    const nn::ModelParamCount count = nn::count_parameters(c);
    const Sums s = sum(c);
    EXPECT_EQ(count.main.total(), s.main);
    EXPECT_EQ(count.mtp.total(), s.mtp);
    EXPECT_EQ(count.mtp_checkpoint_copies, s.copies);
    EXPECT_EQ(count.main.expert_bias + count.mtp.expert_bias, s.buffers);
    EXPECT_EQ(count.checkpoint_total(), s.main + s.mtp + s.copies);
    // Active: all but the routed experts, plus top-k of them in each MoE layer.
    int64_t moe_layers = 0;
    for (int64_t i = 0; i < c.num_layers; ++i) moe_layers += c.is_moe_layer(i) ? 1 : 0;
    const int64_t expert = 3 * c.hidden_size * c.moe.moe_ffn_hidden_size;
    EXPECT_EQ(count.main.routed_experts, moe_layers * c.moe.num_experts * expert);
    EXPECT_EQ(count.main.active(),
              s.main - moe_layers * (c.moe.num_experts - c.moe.moe_router_topk) * expert);
    // The per-block helpers add up to the same.
    EXPECT_EQ(count.main.router + count.main.routed_experts + count.main.shared_experts,
              moe_layers * nn::moe_param_count(c));
    EXPECT_EQ(count.main.attention, c.num_layers * nn::attention_param_count(c));
    EXPECT_EQ(count.main.dense_mlp, (c.num_layers - moe_layers) * nn::dense_mlp_param_count(c));
  }
}

// A published figure `value` (in units of `unit`) and how the publisher rounded it.
enum class Rounding { nearest, down };
::testing::AssertionResult published(int64_t count, double value, double unit, Rounding mode) {
  const double x = static_cast<double>(count) / unit;
  const double shown = mode == Rounding::nearest ? std::round(x) : std::floor(x);
  if (shown == value) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << count << " = " << x << " units of " << unit << " is not published as " << value;
}

TEST(ParamCount, MatchesPublishedTotals) {
  // Exact counts (from the shapes; equal to the checkpoint sums above), then the published
  // figures: Mixtral (mistral.ai: 46.7B / 12.9B; 141B / 39B), Qwen model cards (57.4B / 14.2B,
  // 30.5B / 3.3B, 235B / 22B), DeepSeek papers (236B / 21B; 671B / 37B main model). Two active
  // figures are published rounded down: Qwen3-30B-A3B's 3.353B as "3.3B" and DeepSeek-V3's
  // 37.55B as "37B" (36.6B without the embedding table, which also gives 37B).
  struct Row {
    const char* name;
    int64_t total, active;
    double unit;                        // the published precision: 0.1B or 1B
    int64_t shown_total, shown_active;  // the published figures, in units
    Rounding active_rounding;
  };
  const Row rows[] = {
      {"mixtral-8x7b", 46702792704, 12879925248, 1e8, 467, 129, Rounding::nearest},
      {"mixtral-8x22b", 140620634112, 39152031744, 1e9, 141, 39, Rounding::nearest},
      {"qwen2-57b-a14b", 57408658944, 14249270784, 1e8, 574, 142, Rounding::nearest},
      {"qwen3-30b-a3b", 30532122624, 3353032704, 1e8, 305, 33, Rounding::down},
      {"qwen3-235b-a22b", 235093634560, 22190763520, 1e9, 235, 22, Rounding::nearest},
      {"deepseek-v2", 235741434880, 21375800320, 1e9, 236, 21, Rounding::nearest},
      {"deepseek-v3", 671026404352, 37552282624, 1e9, 671, 37, Rounding::down},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.name);
    const nn::ModelParamCount count = nn::count_parameters(nn::model_zoo(r.name));
    EXPECT_EQ(count.main.total(), r.total);
    EXPECT_EQ(count.main.active(), r.active);
    EXPECT_TRUE(published(r.total, static_cast<double>(r.shown_total), r.unit, Rounding::nearest));
    EXPECT_TRUE(
        published(r.active, static_cast<double>(r.shown_active), r.unit, r.active_rounding));
  }
}

TEST(ParamCount, DeepSeekV3MtpIsReportedApart) {
  const nn::ModelParamCount count = nn::count_parameters(nn::model_zoo("deepseek-v3"));
  // One MTP layer: enorm, hnorm, eh_proj [7168, 14336], an MoE transformer layer, a norm.
  EXPECT_EQ(count.mtp.total(), 11610067968);
  EXPECT_EQ(count.mtp.mtp_projection, 2LL * 7168 * 7168);
  EXPECT_EQ(count.mtp.embedding, 0);  // shared with the main model
  EXPECT_EQ(count.mtp.output_layer, 0);
  // DeepSeek: "685B = 671B main model + 14B MTP module". The checkpoint's MTP layer holds
  // copies of the embedding and head (2 x 129280 x 7168 = 1.85B): 11.61B + 1.85B = 13.46B, and
  // 671.03B + 13.46B = 684.49B; the published 685B also counts the FP8 weights' block scales
  // (about 0.04B), so it is 684.5B rounded up.
  EXPECT_EQ(count.mtp_checkpoint_copies, 2LL * 129280 * 7168);
  EXPECT_EQ(count.checkpoint_total(), 684489830400);
  EXPECT_LT(std::abs(static_cast<double>(count.checkpoint_total()) - 685e9), 0.6e9);
  EXPECT_TRUE(published(count.main.total(), 671, 1e9, Rounding::nearest));
  // The expert bias is a buffer: 256 per MoE layer (58 + the MTP layer), in no total.
  EXPECT_EQ(count.main.expert_bias, 58 * 256);
  EXPECT_EQ(count.mtp.expert_bias, 256);
  EXPECT_EQ(count.total(), count.main.total() + count.mtp.total());
}

TEST(ParamCount, TiedEmbeddingsCountOnce) {
  ModelConfig c = nn::model_zoo("qwen3-moe-tiny");
  const int64_t untied = nn::count_parameters(c).main.total();
  c.untie_embeddings_and_output_weights = false;
  const nn::ModelParamCount tied = nn::count_parameters(c);
  EXPECT_EQ(tied.main.output_layer, 0);
  EXPECT_EQ(untied - tied.main.total(), c.vocab_size * c.hidden_size);
}

TEST(ParamCount, HandCountOfATinyModel) {
  // qwen2-moe-tiny by hand: H 56, V 263, 7 heads of 8, 1 kv group, 4 layers (layer 1 dense,
  // F 121), 6 experts of 29, top-3, shared expert 61 with gate.
  const int64_t attention = 56 * 56 + 2 * 56 * 8 + 56 * 56 + (56 + 2 * 8);  // q, k, v, o, biases
  const int64_t moe = 6 * 56 + 6 * 3 * 56 * 29 + 3 * 56 * 61 + 56;  // router, experts, shared, gate
  const int64_t dense = 3 * 56 * 121;
  const int64_t total = 2 * 263 * 56 + 4 * attention + 3 * moe + dense + (2 * 4 + 1) * 56;
  const nn::ModelParamCount count = nn::count_parameters(nn::model_zoo("qwen2-moe-tiny"));
  EXPECT_EQ(count.main.total(), total);
  EXPECT_EQ(count.main.active(), total - 3 * (6 - 3) * 3 * 56 * 29);
  EXPECT_EQ(count.mtp.total(), 0);
  EXPECT_NE(nn::describe(count).find("routed experts"), std::string::npos);
  EXPECT_EQ(nn::format_param_count(46702792704), "46.70B");
  EXPECT_EQ(nn::format_param_count(999), "999");
}

}  // namespace
}  // namespace moe
