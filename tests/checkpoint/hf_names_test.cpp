// The HF <-> moecore name mapping, family by family, on tensors alone (no model is built):
// the mapping covers exactly the parameters count_parameters() counts, fusing puts gate before
// up and expert e at index e, the round trip HF -> moecore -> HF is exact, and the MTP copies
// are dropped after a check and re-created on export.
#include <gtest/gtest.h>

#include <set>

#include "checkpoint/checkpoint_testing.h"
#include "moe/checkpoint/convert.h"
#include "moe/checkpoint/hf_names.h"
#include "moe/nn/model_zoo.h"
#include "moe/nn/param_count.h"

namespace moe::checkpoint {
namespace {

using namespace moe::checkpoint::testing;
using io::testing::fails_with;

const std::vector<std::string>& tiny_models() {
  static const std::vector<std::string> names{"mixtral-tiny", "qwen2-moe-tiny", "qwen3-moe-tiny",
                                              "deepseek-v2-tiny", "deepseek-v3-tiny"};
  return names;
}

// The HF checkpoint holds count_parameters' checkpoint_total() values plus the expert bias
// buffers; moecore the same without the MTP copies. Checked for every zoo model, published
// sizes included (shapes only).
TEST(CheckpointNames, CoverTheParameterCountOfEveryZooModel) {
  for (const std::string& name : nn::model_zoo_names()) {
    SCOPED_TRACE(name);
    const nn::ModelConfig config = nn::model_zoo(name);
    const nn::ModelParamCount count = nn::count_parameters(config);
    int64_t hf = 0, moecore = 0, buffers = 0;
    std::set<std::string> hf_names, moecore_names;
    for (const UnitMapping& unit : hf_model_mapping(config)) {
      for (const TensorMapping& m : unit.tensors) {
        int64_t numel = 1;
        for (int64_t d : m.shape) numel *= d;
        (m.buffer ? buffers : moecore) += numel;
        EXPECT_TRUE(moecore_names.insert(m.name).second) << m.name;
        int64_t parts = 0;
        for (const auto& expert : m.hf_names)
          for (size_t p = 0; p < expert.size(); ++p) {
            int64_t n = 1;
            for (int64_t d : m.part_shapes[p]) n *= d;
            parts += n;
            EXPECT_TRUE(hf_names.insert(expert[p]).second) << expert[p];
          }
        EXPECT_EQ(parts, numel) << m.name;
        if (!m.buffer) hf += numel;
      }
      for (const HfCopy& c : unit.copies) {
        EXPECT_TRUE(hf_names.insert(c.hf_name).second) << c.hf_name;
        if (!c.optional) hf += config.vocab_size * config.hidden_size;
      }
    }
    EXPECT_EQ(moecore, count.total());
    EXPECT_EQ(hf, count.checkpoint_total());
    EXPECT_EQ(buffers, count.main.expert_bias + count.mtp.expert_bias);
  }
}

TEST(CheckpointNames, FamilyNamesOfTheHubLayouts) {
  const auto hf_names_of = [](const std::string& zoo, int64_t layer) {
    std::set<std::string> names;
    const UnitMapping unit = hf_layer_mapping(nn::model_zoo(zoo), layer);
    for (const TensorMapping& m : unit.tensors)
      for (const auto& expert : m.hf_names) names.insert(expert.begin(), expert.end());
    for (const HfCopy& c : unit.copies) names.insert(c.hf_name);
    return names;
  };
  const auto mixtral = hf_names_of("mixtral-8x7b", 31);
  EXPECT_TRUE(mixtral.count("model.layers.31.block_sparse_moe.gate.weight"));
  EXPECT_TRUE(mixtral.count("model.layers.31.block_sparse_moe.experts.7.w1.weight"));
  EXPECT_TRUE(mixtral.count("model.layers.31.block_sparse_moe.experts.7.w3.weight"));
  EXPECT_TRUE(mixtral.count("model.layers.31.block_sparse_moe.experts.7.w2.weight"));
  EXPECT_EQ(mixtral.size(), 2u + 4 + 1 + 3 * 8);  // norms, q/k/v/o, router, experts

  const auto qwen2 = hf_names_of("qwen2-57b-a14b", 0);
  EXPECT_TRUE(qwen2.count("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_TRUE(qwen2.count("model.layers.0.mlp.experts.63.up_proj.weight"));
  EXPECT_TRUE(qwen2.count("model.layers.0.mlp.shared_expert.gate_proj.weight"));
  EXPECT_TRUE(qwen2.count("model.layers.0.mlp.shared_expert_gate.weight"));

  const auto qwen3 = hf_names_of("qwen3-30b-a3b", 5);
  EXPECT_TRUE(qwen3.count("model.layers.5.self_attn.q_norm.weight"));
  EXPECT_TRUE(qwen3.count("model.layers.5.mlp.experts.127.down_proj.weight"));

  const auto dense = hf_names_of("deepseek-v3", 0);
  EXPECT_TRUE(dense.count("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_TRUE(dense.count("model.layers.0.self_attn.q_a_proj.weight"));
  EXPECT_TRUE(dense.count("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"));
  const auto v3 = hf_names_of("deepseek-v3", 3);
  EXPECT_TRUE(v3.count("model.layers.3.mlp.gate.e_score_correction_bias"));
  EXPECT_TRUE(v3.count("model.layers.3.mlp.shared_experts.down_proj.weight"));
  EXPECT_TRUE(v3.count("model.layers.3.mlp.experts.255.gate_proj.weight"));
  const auto mtp = hf_names_of("deepseek-v3", 61);
  for (const char* n : {"enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
                        "shared_head.head.weight", "embed_tokens.weight",
                        "mlp.experts.0.up_proj.weight", "self_attn.kv_b_proj.weight"})
    EXPECT_TRUE(mtp.count(std::string("model.layers.61.") + n)) << n;

  const auto v2_lite_q = hf_names_of("deepseek-v2", 1);
  EXPECT_TRUE(v2_lite_q.count("model.layers.1.mlp.shared_experts.up_proj.weight"));
}

TEST(CheckpointNames, MoecoreNamesAreTheAgreedOnes) {
  const nn::ModelConfig c = nn::model_zoo("deepseek-v3-tiny");
  std::map<std::string, Shape> names;
  for (const UnitMapping& unit : hf_model_mapping(c))
    for (const TensorMapping& m : unit.tensors) names[m.name] = m.shape;
  const int64_t H = c.hidden_size, E = c.moe.num_experts, F = c.moe.moe_ffn_hidden_size;
  EXPECT_EQ(names.at("model.layers.0.mlp.gate_up_proj.weight"), (Shape{2 * c.ffn_hidden_size, H}));
  EXPECT_EQ(names.at("model.layers.3.mlp.experts.gate_up_proj"), (Shape{E, 2 * F, H}));
  EXPECT_EQ(names.at("model.layers.3.mlp.experts.down_proj"), (Shape{E, H, F}));
  EXPECT_EQ(names.at("model.layers.3.mlp.gate.e_score_correction_bias"), (Shape{E}));
  EXPECT_EQ(names.at("model.layers.3.mlp.shared_expert.gate_up_proj.weight"),
            (Shape{2 * c.moe.moe_shared_expert_intermediate_size, H}));
  EXPECT_EQ(names.at("model.layers.4.eh_proj.weight"), (Shape{H, 2 * H}));
  EXPECT_EQ(names.at("model.layers.4.shared_head.norm.weight"), (Shape{H}));
  EXPECT_EQ(names.at("model.layers.4.mlp.experts.gate_up_proj"), (Shape{E, 2 * F, H}));
  EXPECT_FALSE(names.count("model.layers.4.embed_tokens.weight"));
  EXPECT_FALSE(names.count("model.layers.4.shared_head.head.weight"));
}

// HF -> moecore -> HF returns identical tensors, for every family, in bf16 and f32.
TEST(CheckpointNames, RoundTripIsExactForEveryFamily) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const std::string& name : tiny_models())
    for (DType dtype : {DType::bf16, DType::f32}) {
      SCOPED_TRACE(name + " " + dtype_name(dtype));
      const nn::ModelConfig config = nn::model_zoo(name);
      const TensorMap hf = random_hf_tensors(config, dtype, seed);
      const TensorMap moecore = hf_to_moecore(config, hf);
      EXPECT_TRUE(same_tensors(moecore_to_hf(config, moecore), hf));
      // moecore holds no MTP copies, and one tensor per mapping entry.
      size_t expected = 0;
      for (const UnitMapping& unit : hf_model_mapping(config)) expected += unit.tensors.size();
      EXPECT_EQ(moecore.size(), expected);
    }
}

// The fused layout: expert e of gate_up_proj is [gate_e; up_e] (Mixtral: [w1; w3]), down_proj
// stacks w2 / down_proj; a dense MLP's gate_up_proj is [gate_proj; up_proj].
TEST(CheckpointNames, FusesGateBeforeUpAndExpertsInOrder) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig mixtral = nn::model_zoo("mixtral-tiny");
  TensorMap hf = random_hf_tensors(mixtral, DType::f32, seed);
  TensorMap moecore = hf_to_moecore(mixtral, hf);
  const int64_t E = mixtral.moe.num_experts, F = mixtral.moe.moe_ffn_hidden_size;
  const Tensor fc1 = moecore.at("model.layers.2.mlp.experts.gate_up_proj");
  const Tensor fc2 = moecore.at("model.layers.2.mlp.experts.down_proj");
  for (int64_t e = 0; e < E; ++e) {
    const std::string p = "model.layers.2.block_sparse_moe.experts." + std::to_string(e) + ".";
    const Tensor expert = fc1.rows(e, 1).reshape({2 * F, -1});
    EXPECT_TRUE(io::testing::same_bytes(expert.rows(0, F).clone(), hf.at(p + "w1.weight")));
    EXPECT_TRUE(io::testing::same_bytes(expert.rows(F, F).clone(), hf.at(p + "w3.weight")));
    EXPECT_TRUE(io::testing::same_bytes(fc2.rows(e, 1).reshape(hf.at(p + "w2.weight").shape()).clone(),
                                        hf.at(p + "w2.weight")));
  }
  const nn::ModelConfig qwen2 = nn::model_zoo("qwen2-moe-tiny");  // layer 1 is dense
  hf = random_hf_tensors(qwen2, DType::f32, seed + 1);
  moecore = hf_to_moecore(qwen2, hf);
  const Tensor dense = moecore.at("model.layers.1.mlp.gate_up_proj.weight");
  const int64_t Fd = qwen2.ffn_hidden_size;
  EXPECT_TRUE(io::testing::same_bytes(dense.rows(0, Fd).clone(), hf.at("model.layers.1.mlp.gate_proj.weight")));
  EXPECT_TRUE(io::testing::same_bytes(dense.rows(Fd, Fd).clone(), hf.at("model.layers.1.mlp.up_proj.weight")));
  const Tensor shared = moecore.at("model.layers.0.mlp.shared_expert.gate_up_proj.weight");
  const int64_t Fs = qwen2.moe.moe_shared_expert_intermediate_size;
  EXPECT_TRUE(io::testing::same_bytes(shared.rows(Fs, Fs).clone(),
                                      hf.at("model.layers.0.mlp.shared_expert.up_proj.weight")));
}

TEST(CheckpointNames, MtpCopiesAreCheckedDroppedAndRecreated) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("deepseek-v3-tiny");
  TensorMap hf = random_hf_tensors(config, DType::bf16, seed);
  const TensorMap moecore = hf_to_moecore(config, hf);
  EXPECT_FALSE(moecore.count("model.layers.4.embed_tokens.weight"));
  EXPECT_FALSE(moecore.count("model.layers.4.shared_head.head.weight"));
  const TensorMap back = moecore_to_hf(config, moecore);
  EXPECT_TRUE(io::testing::same_bytes(back.at("model.layers.4.shared_head.head.weight"),
                                      hf.at("lm_head.weight")));
  EXPECT_TRUE(io::testing::same_bytes(back.at("model.layers.4.embed_tokens.weight"),
                                      hf.at("model.embed_tokens.weight")));

  // A copy that differs from the main head: moecore cannot hold it.
  hf["model.layers.4.shared_head.head.weight"] = test::random_normal(
      {config.vocab_size, config.hidden_size}, DType::bf16, seed + 99);
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {"model.layers.4.shared_head.head.weight", "differs from lm_head.weight"}));
  hf.erase("model.layers.4.shared_head.head.weight");
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {"missing tensor model.layers.4.shared_head.head.weight"}));
}

// Tied embeddings: an lm_head.weight that some checkpoints store is checked against the
// embedding and dropped, and not written back; rotary inv_freq buffers are skipped.
TEST(CheckpointNames, TiedHeadAndRotaryBuffers) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::ModelConfig config = nn::model_zoo("qwen3-moe-tiny");
  config.untie_embeddings_and_output_weights = false;
  TensorMap hf = random_hf_tensors(config, DType::bf16, seed);
  ASSERT_FALSE(hf.count("lm_head.weight"));
  const TensorMap moecore = hf_to_moecore(config, hf);
  EXPECT_TRUE(same_tensors(moecore_to_hf(config, moecore), hf));
  hf["lm_head.weight"] = hf.at("model.embed_tokens.weight").clone();
  hf["model.layers.0.self_attn.rotary_emb.inv_freq"] = Tensor::zeros({6}, DType::f32);
  EXPECT_TRUE(same_tensors(hf_to_moecore(config, hf), moecore));
  hf["lm_head.weight"] = test::random_normal({config.vocab_size, config.hidden_size}, DType::bf16, seed + 5);
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {"lm_head.weight", "differs from model.embed_tokens.weight"}));
}

TEST(CheckpointNames, ErrorsNameTheTensor) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("qwen3-moe-tiny");
  const TensorMap good = random_hf_tensors(config, DType::bf16, seed);

  TensorMap hf = good;
  hf.erase("model.layers.1.mlp.experts.4.up_proj.weight");
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {"missing tensor model.layers.1.mlp.experts.4.up_proj.weight",
                          "model.layers.1.mlp.experts.gate_up_proj"}));
  hf = good;
  hf["model.layers.2.self_attn.k_proj.weight"] = test::random_normal({3, 4}, DType::bf16, seed);
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {"model.layers.2.self_attn.k_proj.weight", "shape [3, 4]"}));
  hf = good;
  hf["model.layers.0.mlp.experts.0.gate_proj.weight"] =
      hf.at("model.layers.0.mlp.experts.0.gate_proj.weight").to(DType::f32);
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {"model.layers.0.mlp.experts.0.gate_proj.weight", "must share a dtype"}));
  hf = good;
  hf["model.layers.7.input_layernorm.weight"] = test::random_normal({40}, DType::bf16, seed);
  hf["model.layers.0.mlp.experts.8.up_proj.weight"] = test::random_normal({4}, DType::bf16, seed);
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {"2 tensor(s)", "model.layers.7.input_layernorm.weight",
                          "model.layers.0.mlp.experts.8.up_proj.weight", "qwen3-moe-tiny"}));

  TensorMap moecore = hf_to_moecore(config, good);
  moecore.erase("model.norm.weight");
  EXPECT_TRUE(fails_with([&] { moecore_to_hf(config, moecore); },
                         {"missing tensor model.norm.weight"}));
  moecore = hf_to_moecore(config, good);
  moecore["model.layers.0.mlp.experts.down_proj"] = test::random_normal({2, 2}, DType::bf16, seed);
  EXPECT_TRUE(fails_with([&] { moecore_to_hf(config, moecore); },
                         {"model.layers.0.mlp.experts.down_proj", "shape [2, 2]"}));

  // A Mixtral with a dense layer has no Hugging Face layout.
  nn::ModelConfig dense_mixtral = nn::model_zoo("mixtral-tiny");
  dense_mixtral.moe_layer_pattern = {1, 0, 1};
  EXPECT_TRUE(fails_with([&] { hf_model_mapping(dense_mixtral); },
                         {"mixtral", "dense layer", "model.layers.1."}));
}

}  // namespace
}  // namespace moe::checkpoint
