// `moe convert` on folders: HF -> moecore -> HF returns identical tensors (names, dtypes, shapes,
// bytes) for bf16 / f32 checkpoints and for a DeepSeek-V3-style FP8 checkpoint with MTP layers
// kept with --keep-fp8; dequantization to --dtype; sharding; tokenizer files; atomic output.
#include "moe/checkpoint/checkpoint_convert.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/checkpoint_testing.h"
#include "moe/checkpoint/hf_config_import.h"
#include "moe/checkpoint/shard_writer.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;
using namespace moe::checkpoint::testing;
using io::testing::fails_with;
using CheckpointConvert = io::testing::ScratchFolder;

ConvertCheckpointOptions to(CheckpointFormat from, CheckpointFormat target) {
  ConvertCheckpointOptions o;
  o.from = from;
  o.to = target;
  o.max_shard_bytes = 50'000;
  return o;
}

TEST_F(CheckpointConvert, RoundTripIsExactForBf16AndF32) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const char* name : {"qwen2-moe-tiny", "mixtral-tiny", "deepseek-v2-tiny"})
    for (DType dtype : {DType::bf16, DType::f32}) {
      SCOPED_TRACE(std::string(name) + " " + dtype_name(dtype));
      const std::string tag = std::string(name) + dtype_name(dtype);
      const nn::ModelConfig config = nn::model_zoo(name);
      const TensorMap hf = random_hf_tensors(config, dtype, seed);
      write_hf_folder(dir_ / (tag + "-hf"), config, hf, dtype);
      const ConvertSummary a =
          convert_checkpoint(path(tag + "-hf"), path(tag + "-moe"),
                             to(CheckpointFormat::hf, CheckpointFormat::moecore));
      EXPECT_GT(a.files.size(), 1u);  // sharded at 50 kB
      EXPECT_EQ(a.copied, std::vector<std::string>{"tokenizer.json"});
      const ConvertSummary b =
          convert_checkpoint(path(tag + "-moe"), path(tag + "-back"),
                             to(CheckpointFormat::moecore, CheckpointFormat::hf));
      EXPECT_TRUE(same_tensors(read_all(path(tag + "-back")), hf));
      EXPECT_TRUE(fs::exists(dir_ / (tag + "-back") / "tokenizer.json"));
      // config.json reads back to the same model.
      nn::ModelConfig back = checkpoint::from_hf_config_file(path(tag + "-back"));
      EXPECT_EQ(back.name, tag + "-back");  // HF configs take the folder's name
      back.name = config.name;
      EXPECT_EQ(nn::model_config_to_json(back).dump(), nn::model_config_to_json(config).dump());
      EXPECT_EQ(b.tensors_written, a.tensors_read);
    }
}

// DeepSeek-V3-style: FP8 projections with 16x32 block scales (several blocks, partial ones, and
// gate/up parts of 21 rows that cut blocks), bf16 rest, f32 expert bias, one MTP layer with its
// copies of the embedding and head.
TEST_F(CheckpointConvert, Fp8WithMtpRoundTripsWithKeepFp8) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("deepseek-v3-tiny");
  const Fp8BlockSize block{16, 32};
  const TensorMap hf = random_hf_tensors(config, DType::bf16, seed, /*fp8=*/true, block);
  ASSERT_TRUE(hf.count("model.layers.4.shared_head.head.weight"));
  ASSERT_TRUE(hf.count("model.layers.4.mlp.experts.15.down_proj.weight_scale_inv"));
  write_hf_folder(dir_ / "hf", config, hf, DType::bf16, block);

  ConvertCheckpointOptions keep = to(CheckpointFormat::hf, CheckpointFormat::moecore);
  keep.keep_fp8 = true;
  std::vector<std::string> log;
  keep.log = [&](const std::string& line) { log.push_back(line); };
  const ConvertSummary a = convert_checkpoint(path("hf"), path("moe"), keep);
  ASSERT_EQ(a.notes.size(), 1u);
  EXPECT_NE(a.notes[0].find("cuts a block"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir_ / "moe" / "quantization_config.json"));
  const TensorMap moecore = read_all(path("moe"));
  EXPECT_EQ(moecore.at("model.layers.4.mlp.experts.gate_up_proj").dtype(), DType::fp8_e4m3);
  EXPECT_EQ(moecore.at("model.layers.4.mlp.experts.gate_up_proj_scale_inv").shape(),
            (Shape{16, 2 * 2, 3}));  // per expert: 2 x ceil(21/16) rows, ceil(70/32) cols
  EXPECT_FALSE(moecore.count("model.layers.4.embed_tokens.weight"));

  const ConvertSummary b = convert_checkpoint(path("moe"), path("back"),
                                              to(CheckpointFormat::moecore, CheckpointFormat::hf));
  EXPECT_TRUE(same_tensors(read_all(path("back")), hf));
  const nlohmann::json config_json =
      nlohmann::json::parse(std::ifstream(dir_ / "back" / "config.json"));
  EXPECT_EQ(fp8_block_size_of(config_json.at("quantization_config")), block);
  EXPECT_EQ(config_json.at("num_nextn_predict_layers"), 1);

  // Dequantized to f32 instead: the FP8 weights become f32, the rest keeps bf16, no scales.
  ConvertCheckpointOptions dequant = to(CheckpointFormat::hf, CheckpointFormat::moecore);
  dequant.dtype = DType::f32;
  convert_checkpoint(path("hf"), path("moe-f32"), dequant);
  const TensorMap plain = read_all(path("moe-f32"));
  EXPECT_FALSE(fs::exists(dir_ / "moe-f32" / "quantization_config.json"));
  EXPECT_EQ(plain.at("model.layers.1.self_attn.q_b_proj.weight").dtype(), DType::f32);
  EXPECT_EQ(plain.at("model.layers.1.input_layernorm.weight").dtype(), DType::bf16);
  for (const auto& [name, t] : plain) EXPECT_FALSE(name.ends_with(kScaleSuffix)) << name;
  EXPECT_TRUE(io::testing::same_bytes(
      plain.at("model.layers.1.self_attn.q_b_proj.weight"),
      dequantize_fp8_blocks(hf.at("model.layers.1.self_attn.q_b_proj.weight"),
                            hf.at("model.layers.1.self_attn.q_b_proj.weight_scale_inv"), DType::f32,
                            block)));
}

TEST_F(CheckpointConvert, OutputIsAtomicAndChecked) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("qwen3-moe-tiny");
  TensorMap hf = random_hf_tensors(config, DType::bf16, seed);
  write_hf_folder(dir_ / "hf", config, hf, DType::bf16);
  const auto hf_to_moe = to(CheckpointFormat::hf, CheckpointFormat::moecore);
  convert_checkpoint(path("hf"), path("out"), hf_to_moe);
  EXPECT_TRUE(fails_with([&] { convert_checkpoint(path("hf"), path("out"), hf_to_moe); },
                         {"out", "already exists", "--force"}));
  auto force = hf_to_moe;
  force.overwrite = true;
  convert_checkpoint(path("hf"), path("out"), force);
  EXPECT_TRUE(fails_with([&] { convert_checkpoint(path("out"), path("out2"), hf_to_moe); },
                         {"is a moecore folder, not hf"}));
  EXPECT_TRUE(fails_with(
      [&] {
        convert_checkpoint(path("hf"), path("x"), to(CheckpointFormat::hf, CheckpointFormat::hf));
      },
      {"nothing to convert"}));

  // A failing conversion leaves neither the output nor a temporary folder.
  hf.erase("model.layers.2.self_attn.q_norm.weight");
  fs::remove_all(dir_ / "hf");
  write_hf_folder(dir_ / "hf", config, hf, DType::bf16);
  EXPECT_TRUE(fails_with([&] { convert_checkpoint(path("hf"), path("failed"), hf_to_moe); },
                         {"missing tensor model.layers.2.self_attn.q_norm.weight"}));
  EXPECT_EQ(listing(), (std::set<std::string>{"hf", "out"}));
}

TEST(ShardWriterSizes, ParsesTransformersSizes) {
  EXPECT_EQ(parse_byte_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_byte_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_byte_size("2GiB"), 2ull << 30);
  EXPECT_EQ(parse_byte_size("123"), 123u);
  EXPECT_EQ(parse_byte_size("10kb"), 10'000u);
  EXPECT_TRUE(fails_with([] { parse_byte_size("5 GB"); }, {"5 GB"}));
  EXPECT_TRUE(fails_with([] { parse_byte_size("GB"); }, {"GB"}));
  EXPECT_TRUE(fails_with([] { parse_byte_size("0"); }, {"positive"}));
}

}  // namespace
}  // namespace moe::checkpoint
