// DeepSeek FP8 block dequantization: known answers (a block with a known scale, partial edge
// blocks), round trips through quantize, the quantization_config reader, and FP8 through the
// HF <-> moecore mapping (kept bit for bit with fused scales, or dequantized per part).
#include <gtest/gtest.h>

#include "checkpoint/checkpoint_testing.h"
#include "moe/checkpoint/convert.h"
#include "moe/checkpoint/fp8_blocks.h"
#include "moe/nn/model_zoo.h"

namespace moe::checkpoint {
namespace {

using namespace moe::checkpoint::testing;
using io::testing::fails_with;

// A [130, 257] weight in 128x128 blocks: scale grid [2, 3] with partial last blocks (2 rows,
// 1 column). Every fp8 value is exactly representable, every scale a power of two times a
// small integer, so w = fp8 * scale is exact in f32 and checked element by element.
TEST(Fp8Blocks, KnownAnswerWithPartialBlocks) {
  const int64_t R = 130, C = 257;
  const float values[] = {1.5f, -0.375f, 448.0f, 0.0f, -2.0f, 0.013671875f /* 7 * 2^-9 */};
  std::vector<fp8_e4m3> q(static_cast<size_t>(R * C));
  for (int64_t i = 0; i < R * C; ++i) q[static_cast<size_t>(i)] = fp8_e4m3(values[i % 6]);
  for (int64_t i = 0; i < 6; ++i) ASSERT_EQ(static_cast<float>(fp8_e4m3(values[i])), values[i]);
  const std::vector<float> scales{0.25f, 3.0f, 1.0f / 1024, -0.5f, 2.0f, 6.0f};
  const Tensor w = Tensor::from_vector(q, {R, C});
  const Tensor s = Tensor::from_vector(scales, {2, 3});
  EXPECT_EQ(fp8_scale_shape({R, C}, {}), (Shape{2, 3}));

  const Tensor out = dequantize_fp8_blocks(w, s, DType::f32);
  const std::vector<float> y = out.to_vector<float>();
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) {
      const float expected = values[(i * C + j) % 6] * scales[static_cast<size_t>((i / 128) * 3 + j / 128)];
      ASSERT_EQ(y[static_cast<size_t>(i * C + j)], expected) << i << "," << j;
    }
  // bf16 output: the same products rounded once.
  const Tensor out_bf16 = dequantize_fp8_blocks(w, s, DType::bf16);
  EXPECT_TRUE(io::testing::same_bytes(out_bf16, out.to(DType::bf16)));
  // Block rows / cols of other sizes: [130, 257] in 64x100 blocks -> [3, 3].
  const Tensor s2 = Tensor::full({3, 3}, 0.5, DType::f32);
  const std::vector<float> y2 = dequantize_fp8_blocks(w, s2, DType::f32, {64, 100}).to_vector<float>();
  EXPECT_EQ(y2[static_cast<size_t>(129 * C + 256)], values[(129 * C + 256) % 6] * 0.5f);
}

TEST(Fp8Blocks, QuantizeThenDequantizeIsCloseAndExactForItsOwnValues) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor w = test::random_normal({200, 131}, DType::f32, seed);
  auto [q, s] = quantize_fp8_blocks(w, {64, 64});
  EXPECT_EQ(q.dtype(), DType::fp8_e4m3);
  EXPECT_EQ(s.shape(), (Shape{4, 3}));
  const Tensor back = dequantize_fp8_blocks(q, s, DType::f32, {64, 64});
  EXPECT_TRUE(test::close(back, w, test::tolerance(DType::fp8_e4m3)));
  // Each block's largest magnitude maps to 448 exactly.
  EXPECT_FLOAT_EQ(s.to_vector<float>()[0] * 448.0f,
                  [&] {
                    const std::vector<float> v = w.to_vector<float>();
                    float amax = 0;
                    for (int64_t i = 0; i < 64; ++i)
                      for (int64_t j = 0; j < 64; ++j) amax = std::max(amax, std::abs(v[static_cast<size_t>(i * 131 + j)]));
                    return amax;
                  }());
}

TEST(Fp8Blocks, BadInputIsAnError) {
  const Tensor q = Tensor::zeros({10, 10}, DType::fp8_e4m3);
  EXPECT_TRUE(fails_with([&] { dequantize_fp8_blocks(q, Tensor::zeros({2, 1}, DType::f32), DType::f32, {128, 128}, "w.weight"); },
                         {"w.weight_scale_inv", "[2, 1]", "[1, 1]"}));
  EXPECT_TRUE(fails_with([&] { dequantize_fp8_blocks(Tensor::zeros({10, 10}, DType::bf16), Tensor::zeros({1, 1}, DType::f32), DType::f32); },
                         {"not fp8"}));
  EXPECT_TRUE(fails_with([&] { dequantize_fp8_blocks(Tensor::zeros({10}, DType::fp8_e4m3), Tensor::zeros({1}, DType::f32), DType::f32); },
                         {"2-D"}));

  using nlohmann::json;
  EXPECT_EQ(fp8_block_size_of(json::parse(R"({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 64]})")),
            (Fp8BlockSize{128, 64}));
  EXPECT_EQ(fp8_block_size_of(json(nullptr)), std::nullopt);
  EXPECT_EQ(fp8_block_size_of(fp8_quantization_config({128, 128})), (Fp8BlockSize{128, 128}));
  EXPECT_TRUE(fails_with([&] { fp8_block_size_of(json::parse(R"({"quant_method": "gptq"})")); }, {"fp8"}));
  EXPECT_TRUE(fails_with([&] { fp8_block_size_of(json::parse(R"({"quant_method": "fp8", "weight_block_size": [128]})")); },
                         {"weight_block_size"}));
}

// A DeepSeek-V3-style checkpoint (FP8 projections with scales, MTP layer): kept FP8 round-trips
// bit for bit, with per-expert [E, ...] scale stacks; dequantized, each fused tensor equals the
// per-part dequantization.
TEST(Fp8Blocks, MappingKeepsOrDequantizesFp8) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("deepseek-v3-tiny");
  for (Fp8BlockSize block : {Fp8BlockSize{128, 128}, Fp8BlockSize{16, 32}}) {
    SCOPED_TRACE(block.rows);
    const TensorMap hf = random_hf_tensors(config, DType::bf16, seed, /*fp8=*/true, block);
    ASSERT_EQ(hf.at("model.layers.2.mlp.experts.3.gate_proj.weight").dtype(), DType::fp8_e4m3);
    const MapTensorSource source(hf);
    const std::vector<UnitMapping> units = hf_model_mapping(config);
    check_hf_names(config, units, source);

    ConvertOptions keep;
    keep.dequantize = false;
    keep.block = block;
    std::vector<std::string> notes;
    keep.note = [&](const std::string& line) { notes.push_back(line); };
    TensorMap moecore;
    for (const UnitMapping& unit : units)
      unit_hf_to_moecore(unit, source, keep, [&](const std::string& n, Tensor t) { moecore[n] = t; });
    const int64_t E = config.moe.num_experts, F = config.moe.moe_ffn_hidden_size;
    const int64_t H = config.hidden_size;
    const int64_t fb = (F + block.rows - 1) / block.rows, hb = (H + block.cols - 1) / block.cols;
    EXPECT_EQ(moecore.at("model.layers.2.mlp.experts.gate_up_proj").dtype(), DType::fp8_e4m3);
    EXPECT_EQ(moecore.at("model.layers.2.mlp.experts.gate_up_proj_scale_inv").shape(),
              (Shape{E, 2 * fb, hb}));
    EXPECT_EQ(moecore.at("model.layers.2.mlp.experts.down_proj_scale_inv").shape(),
              (Shape{E, (H + block.rows - 1) / block.rows, (F + block.cols - 1) / block.cols}));
    EXPECT_EQ(moecore.at("model.layers.2.mlp.gate.weight").dtype(), DType::bf16);  // router
    // F = 21 is not a multiple of the block rows: the user is told the fused grid restarts.
    ASSERT_FALSE(notes.empty());
    EXPECT_NE(notes[0].find("cuts a block"), std::string::npos) << notes[0];

    const MapTensorSource moecore_source(moecore);
    check_moecore_names(config, units, moecore_source);
    TensorMap back;
    for (const UnitMapping& unit : units)
      unit_moecore_to_hf(unit, moecore_source, keep, [&](const std::string& n, Tensor t) { back[n] = t; });
    EXPECT_TRUE(same_tensors(back, hf));

    // Dequantized: gate_up of expert 5 = [deq(gate_5); deq(up_5)].
    ConvertOptions dequant;
    dequant.block = block;
    dequant.dequantized_dtype = DType::f32;
    TensorMap plain;
    for (const UnitMapping& unit : units)
      unit_hf_to_moecore(unit, source, dequant, [&](const std::string& n, Tensor t) { plain[n] = t; });
    EXPECT_FALSE(plain.count("model.layers.2.mlp.experts.gate_up_proj_scale_inv"));
    const Tensor fc1 = plain.at("model.layers.2.mlp.experts.gate_up_proj");
    EXPECT_EQ(fc1.dtype(), DType::f32);
    const std::string p = "model.layers.2.mlp.experts.5.";
    const Tensor up = dequantize_fp8_blocks(hf.at(p + "up_proj.weight"),
                                            hf.at(p + "up_proj.weight_scale_inv"), DType::f32, block);
    EXPECT_TRUE(io::testing::same_bytes(fc1.rows(5, 1).reshape({2 * F, H}).rows(F, F).clone(), up));
    // The moecore reader dequantizes kept FP8 the same way (per-part grid).
    for (const UnitMapping& unit : units)
      for (const TensorMapping& m : unit.tensors)
        EXPECT_TRUE(io::testing::same_bytes(load_moecore_tensor(m, moecore_source, block, DType::f32),
                                            plain.at(m.name)))
            << m.name;
  }
}

TEST(Fp8Blocks, ScalesMustMatchTheirWeights) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("deepseek-v3-tiny");
  const TensorMap good = random_hf_tensors(config, DType::bf16, seed, /*fp8=*/true);
  const std::string w = "model.layers.1.self_attn.kv_b_proj.weight";
  TensorMap hf = good;
  hf.erase(w + "_scale_inv");
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {"FP8 tensor " + w, "no block scales " + w + "_scale_inv"}));
  hf = good;
  hf[w + "_scale_inv"] = Tensor::full({2, 1}, 1.0, DType::f32);
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {w + "_scale_inv", "shape [2, 1]", "expected [1, 1]"}));
  // Scales next to a weight that is not FP8.
  hf = good;
  hf["model.layers.0.input_layernorm.weight_scale_inv"] = Tensor::full({1, 1}, 1.0, DType::f32);
  EXPECT_TRUE(fails_with([&] { hf_to_moecore(config, hf); },
                         {"model.layers.0.input_layernorm.weight_scale_inv", "not FP8"}));
  // A kept FP8 moecore tensor without its fused scales.
  TensorMap moecore = hf_to_moecore(config, good, /*dequantize=*/false);
  moecore.erase("model.layers.3.mlp.experts.down_proj_scale_inv");
  EXPECT_TRUE(fails_with([&] { moecore_to_hf(config, moecore); },
                         {"model.layers.3.mlp.experts.down_proj", "no block scales"}));
}

}  // namespace
}  // namespace moe::checkpoint
