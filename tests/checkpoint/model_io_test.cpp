// Model folders: save_model / load_model on moecore folders, load_model on Hugging Face folders
// (written here from a GPTModel's tensors with moecore_to_hf and our safetensors writer, FP8
// included), all giving the source model's logits; and the errors of malformed folders.
#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/checkpoint_testing.h"
#include "moe/checkpoint/checkpoint_convert.h"
#include "moe/checkpoint/model_io.h"
#include "moe/nn/model_zoo.h"
#include "nn/gpt_test_util.h"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;
using namespace moe::checkpoint::testing;
using io::testing::fails_with;
using CheckpointModelIo = io::testing::ScratchFolder;

const std::vector<std::string>& gqa_models() {
  static const std::vector<std::string> names{"mixtral-tiny", "qwen2-moe-tiny", "qwen3-moe-tiny"};
  return names;
}

// Every parameter and buffer random (std 0.3: routing far from ties), so that a tensor loaded
// into the wrong place changes the logits.
void randomize(nn::GPTModel& model, uint64_t seed) {
  for (nn::Parameter* p : model.parameters())
    p->value.copy_(test::random_normal(p->value.shape(), p->value.dtype(), seed++, p->value.device(), 0.3));
  for (const nn::NamedBuffer& b : model.buffers())
    b.value->copy_(test::random_normal(b.value->shape(), b.value->dtype(), seed++, b.value->device(), 0.3));
}

TensorMap model_tensors(nn::GPTModel& model) {
  TensorMap out;
  for (nn::Parameter* p : model.parameters()) out[p->name] = p->value.clone();
  for (const nn::NamedBuffer& b : model.buffers()) out[b.name] = b.value->clone();
  return out;
}

Tensor tokens(const nn::ModelConfig& c, uint64_t seed) { return test::random_tokens(7, 3, c.vocab_size, seed); }

TEST_F(CheckpointModelIo, MoecoreAndHfFoldersGiveTheSourceLogits) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const std::string& name : gqa_models()) {
    SCOPED_TRACE(name);
    const nn::ModelConfig config = nn::model_zoo(name);
    nn::GPTModel source(config, DType::f32, Device::cpu(), seed);
    randomize(source, seed);
    const Tensor ids = tokens(config, seed);
    const Tensor expected = source.logits(ids);

    const std::string moecore_dir = path(name + "-moecore");
    save_model(moecore_dir, source, {.max_shard_bytes = 200'000});
    EXPECT_EQ(detect_format(moecore_dir), CheckpointFormat::moecore);
    EXPECT_TRUE(fs::exists(fs::path(moecore_dir) / "model.safetensors.index.json"));
    auto loaded = load_model(moecore_dir, DType::f32, Device::cpu());
    EXPECT_TRUE(io::testing::same_bytes(loaded->logits(ids), expected));
    EXPECT_TRUE(same_tensors(model_tensors(*loaded), model_tensors(source)));

    const fs::path hf_dir = dir_ / (name + "-hf");
    write_hf_folder(hf_dir, config, moecore_to_hf(config, model_tensors(source)), DType::f32);
    EXPECT_EQ(detect_format(hf_dir.string()), CheckpointFormat::hf);
    auto from_hf = load_model(hf_dir.string(), DType::f32, Device::cpu());
    EXPECT_TRUE(io::testing::same_bytes(from_hf->logits(ids), expected));

    // `adjust` edits the config before the model is built (here: the dispatcher).
    auto adjusted = load_model(hf_dir.string(), DType::f32, Device::cpu(), [](nn::ModelConfig& c) {
      c.moe.moe_token_dispatcher_type = nn::DispatcherType::alltoall;
    });
    EXPECT_EQ(adjusted->config().moe.moe_token_dispatcher_type, nn::DispatcherType::alltoall);
    EXPECT_TRUE(test::close(adjusted->logits(ids), expected, test::tolerance(DType::f32)));
  }
}

// The moecore layout of hf_names.h is exactly the GPTModel's parameters and buffers (names and
// shapes), for every family: MLA and MTP (DeepSeek) included.
TEST(CheckpointModelLayout, IsTheModelsParametersAndBuffers) {
  for (const char* name :
       {"mixtral-tiny", "qwen2-moe-tiny", "qwen3-moe-tiny", "deepseek-v2-tiny", "deepseek-v3-tiny"}) {
    SCOPED_TRACE(name);
    const nn::ModelConfig config = nn::model_zoo(name);
    nn::GPTModel model(config, DType::f32, Device::cpu());
    std::map<std::string, Shape> layout, params;
    for (const UnitMapping& unit : hf_model_mapping(config))
      for (const TensorMapping& m : unit.tensors) layout[m.name] = m.shape;
    for (nn::Parameter* p : model.parameters()) params[p->name] = p->value.shape();
    for (const nn::NamedBuffer& b : model.buffers()) params[b.name] = b.value->shape();
    EXPECT_EQ(params, layout);
  }
}

// DeepSeek-V3 (MLA, dense and MoE layers, expert bias, an MTP layer): an FP8 HF folder (MTP
// copies included) and its moecore conversions load to the same model; the moecore save of that
// model loads back to identical tensors and logits.
TEST_F(CheckpointModelIo, DeepSeekV3WithFp8AndMtp) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("deepseek-v3-tiny");
  const Fp8BlockSize block{16, 32};
  const TensorMap hf = random_hf_tensors(config, DType::bf16, seed, /*fp8=*/true, block);
  write_hf_folder(dir_ / "hf", config, hf, DType::bf16, block);
  auto model = load_model(path("hf"), DType::f32, Device::cpu());
  const Tensor ids = tokens(config, seed);
  const Tensor expected = model->logits(ids);
  ConvertCheckpointOptions keep;
  keep.keep_fp8 = true;
  convert_checkpoint(path("hf"), path("kept"), keep);
  EXPECT_TRUE(same_tensors(model_tensors(*load_model(path("kept"), DType::f32, Device::cpu())),
                           model_tensors(*model)));
  save_model(path("saved"), *model);
  auto saved = load_model(path("saved"), DType::f32, Device::cpu());
  EXPECT_TRUE(same_tensors(model_tensors(*saved), model_tensors(*model)));
  EXPECT_TRUE(io::testing::same_bytes(saved->logits(ids), expected));
  // Without the MTP layer (as transformers loads DeepSeek-V3): the checkpoint's MTP tensors are
  // skipped and the main model's logits do not change.
  auto no_mtp = load_model(path("hf"), DType::f32, Device::cpu(),
                           [](nn::ModelConfig& c) { c.mtp_num_layers = 0; });
  EXPECT_TRUE(io::testing::same_bytes(no_mtp->logits(ids), expected));
}

// A DeepSeek-V3 folder as transformers saves it: config.json keeps num_nextn_predict_layers but
// no MTP tensor is written. It loads as the model without MTP (the main model's logits); a
// model asked for MTP layers (moe train --mtp-num-layers) gets them fresh, as a new model's; a
// folder holding only part of the MTP tensors is an error naming what is missing.
TEST_F(CheckpointModelIo, HfFolderWithoutMtpTensorsLoadsWithoutMtp) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("deepseek-v3-tiny");
  ASSERT_GT(config.mtp_num_layers, 0);
  const TensorMap hf = random_hf_tensors(config, DType::f32, seed);
  write_hf_folder(dir_ / "full", config, hf, DType::f32);
  auto full = load_model(path("full"), DType::f32, Device::cpu());
  const Tensor ids = tokens(config, seed);
  const Tensor expected = full->logits(ids);

  const std::string mtp_prefix = "model.layers." + std::to_string(config.num_layers) + ".";
  TensorMap without_mtp;
  for (const auto& [name, t] : hf)
    if (name.rfind(mtp_prefix, 0) != 0) without_mtp[name] = t;
  ASSERT_LT(without_mtp.size(), hf.size());
  write_hf_folder(dir_ / "no-mtp", config, without_mtp, DType::f32);
  EXPECT_EQ(read_model_config(path("no-mtp"), CheckpointFormat::hf).mtp_num_layers, 0);
  auto loaded = load_model(path("no-mtp"), DType::f32, Device::cpu());
  EXPECT_EQ(loaded->config().mtp_num_layers, 0);
  EXPECT_TRUE(io::testing::same_bytes(loaded->logits(ids), expected));

  // Asked for the MTP layer: it starts as a new model's (seed 1234, load_model's), the rest is
  // the folder's.
  auto with_mtp = load_model(path("no-mtp"), DType::f32, Device::cpu(), [&](nn::ModelConfig& c) {
    c.mtp_num_layers = config.mtp_num_layers;
  });
  EXPECT_EQ(with_mtp->config().mtp_num_layers, config.mtp_num_layers);
  EXPECT_TRUE(io::testing::same_bytes(with_mtp->logits(ids), expected));
  nn::GPTModel fresh(config, DType::f32, Device::cpu(), 1234);
  const TensorMap fresh_tensors = model_tensors(fresh), loaded_tensors = model_tensors(*with_mtp);
  size_t mtp_tensors = 0;
  for (const auto& [name, t] : loaded_tensors) {
    if (name.rfind(mtp_prefix, 0) != 0) continue;
    ++mtp_tensors;
    EXPECT_TRUE(io::testing::same_bytes(t, fresh_tensors.at(name))) << name;
  }
  EXPECT_GT(mtp_tensors, 0u);

  // Some MTP tensors but not all: an error naming a missing one.
  TensorMap partial = without_mtp;
  partial[mtp_prefix + "enorm.weight"] = hf.at(mtp_prefix + "enorm.weight");
  write_hf_folder(dir_ / "partial", config, partial, DType::f32);
  EXPECT_TRUE(fails_with([&] { (void)load_model(path("partial"), DType::f32, Device::cpu()); },
                         {mtp_prefix + "hnorm.weight", "missing"}));
}

// The expert bias is a buffer: saved and loaded with the parameters.
TEST_F(CheckpointModelIo, ExpertBiasBufferRoundTrips) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::ModelConfig config = nn::model_zoo("qwen3-moe-tiny");
  config.moe.moe_router_score_function = ops::ScoreFunction::sigmoid;
  config.moe.moe_router_enable_expert_bias = true;
  config.validate();
  nn::GPTModel source(config, DType::f32, Device::cpu(), seed);
  randomize(source, seed);
  ASSERT_EQ(source.buffers().size(), 3u);
  save_model(path("bias"), source);
  auto loaded = load_model(path("bias"), DType::f32, Device::cpu());
  EXPECT_TRUE(same_tensors(model_tensors(*loaded), model_tensors(source)));
  const Tensor ids = tokens(config, seed);
  EXPECT_TRUE(io::testing::same_bytes(loaded->logits(ids), source.logits(ids)));
}

// An FP8 HF folder (projections in 16x16 blocks) loads dequantized; through `moe convert
// --keep-fp8` to a moecore folder it loads to the same model, and dequantized to f32 as well.
TEST_F(CheckpointModelIo, Fp8FoldersLoadDequantized) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("qwen3-moe-tiny");
  const Fp8BlockSize block{16, 16};
  const TensorMap hf = random_hf_tensors(config, DType::bf16, seed, /*fp8=*/true, block);
  write_hf_folder(dir_ / "hf", config, hf, DType::bf16, block);
  auto model = load_model(path("hf"), DType::f32, Device::cpu());
  // The reference: every FP8 weight dequantized by hand, in f32.
  TensorMap plain;
  for (const auto& [name, t] : hf) {
    if (name.ends_with(kScaleSuffix)) continue;
    plain[name] = t.dtype() == DType::fp8_e4m3
                      ? dequantize_fp8_blocks(t, hf.at(name + kScaleSuffix), DType::f32, block)
                      : t.to(DType::f32);
  }
  write_hf_folder(dir_ / "hf-plain", config, plain, DType::f32);
  auto reference = load_model(path("hf-plain"), DType::f32, Device::cpu());
  EXPECT_TRUE(same_tensors(model_tensors(*model), model_tensors(*reference)));
  const Tensor ids = tokens(config, seed);
  const Tensor expected = reference->logits(ids);
  EXPECT_TRUE(io::testing::same_bytes(model->logits(ids), expected));

  ConvertCheckpointOptions keep;
  keep.keep_fp8 = true;
  convert_checkpoint(path("hf"), path("moecore-fp8"), keep);
  EXPECT_EQ(read_fp8_block_size(path("moecore-fp8"), CheckpointFormat::moecore), block);
  auto kept = load_model(path("moecore-fp8"), DType::f32, Device::cpu());
  EXPECT_TRUE(io::testing::same_bytes(kept->logits(ids), expected));

  ConvertCheckpointOptions dequant;
  dequant.dtype = DType::f32;
  convert_checkpoint(path("hf"), path("moecore-f32"), dequant);
  auto f32 = load_model(path("moecore-f32"), DType::f32, Device::cpu());
  EXPECT_TRUE(io::testing::same_bytes(f32->logits(ids), expected));
}

TEST_F(CheckpointModelIo, MalformedFoldersAreErrorsNamingTheCause) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("mixtral-tiny");
  const TensorMap good = random_hf_tensors(config, DType::f32, seed);

  EXPECT_TRUE(fails_with([&] { load_model(path("absent"), DType::f32, Device::cpu()); },
                         {"absent", "does not exist"}));
  fs::create_directories(dir_ / "empty");
  EXPECT_TRUE(fails_with([&] { load_model(path("empty"), DType::f32, Device::cpu()); },
                         {"empty", "neither config.json"}));

  TensorMap missing = good;
  missing.erase("model.layers.1.block_sparse_moe.experts.2.w2.weight");
  write_hf_folder(dir_ / "missing", config, missing, DType::f32);
  EXPECT_TRUE(fails_with([&] { load_model(path("missing"), DType::f32, Device::cpu()); },
                         {"missing tensor model.layers.1.block_sparse_moe.experts.2.w2.weight",
                          path("missing")}));

  TensorMap wrong = good;
  wrong["model.norm.weight"] = Tensor::zeros({3}, DType::f32);
  write_hf_folder(dir_ / "wrong", config, wrong, DType::f32, std::nullopt, 1 << 30);
  EXPECT_TRUE(fails_with([&] { load_model(path("wrong"), DType::f32, Device::cpu()); },
                         {"model.norm.weight", "model.safetensors", "shape [3]", "[48]"}));

  TensorMap extra = good;
  extra["model.layers.0.mlp.gate_proj.weight"] = Tensor::zeros({2, 2}, DType::f32);
  write_hf_folder(dir_ / "extra", config, extra, DType::f32);
  EXPECT_TRUE(fails_with([&] { load_model(path("extra"), DType::f32, Device::cpu()); },
                         {"model.layers.0.mlp.gate_proj.weight", "does not have"}));

  // A truncated shard.
  write_hf_folder(dir_ / "truncated", config, good, DType::f32, std::nullopt, 1 << 30);
  const std::string file = (dir_ / "truncated" / "model.safetensors").string();
  fs::resize_file(file, fs::file_size(file) - 5);
  EXPECT_TRUE(fails_with([&] { load_model(path("truncated"), DType::f32, Device::cpu()); },
                         {"model.safetensors"}));

  // Both config files.
  write_hf_folder(dir_ / "both", config, good, DType::f32);
  write_text(dir_ / "both" / "model_config.json", "{}");
  EXPECT_TRUE(fails_with([&] { load_model(path("both"), DType::f32, Device::cpu()); },
                         {"both model_config.json", "config.json"}));
}

TEST_F(CheckpointModelIo, SaveReplacesAModelFolderAtomically) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("qwen3-moe-tiny");
  nn::GPTModel a(config, DType::f32, Device::cpu(), seed);
  randomize(a, seed);
  save_model(path("m"), a, {.max_shard_bytes = 100'000});
  nn::GPTModel b(config, DType::f32, Device::cpu(), seed + 1);
  randomize(b, seed + 1000);
  save_model(path("m"), b);  // one file now: the old shards are gone with the old folder
  EXPECT_TRUE(fs::exists(dir_ / "m" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "m" / "model.safetensors.index.json"));
  EXPECT_TRUE(same_tensors(model_tensors(*load_model(path("m"), DType::f32, Device::cpu())),
                           model_tensors(b)));
  EXPECT_EQ(listing(), (std::set<std::string>{"m"}));  // no temporaries left
  // Not over a folder that is not a model folder.
  fs::create_directories(dir_ / "home");
  write_text(dir_ / "home" / "notes.txt", "keep me");
  EXPECT_TRUE(fails_with([&] { save_model(path("home"), a); }, {"refusing to replace", "home"}));
  EXPECT_TRUE(fs::exists(dir_ / "home" / "notes.txt"));
}

}  // namespace
}  // namespace moe::checkpoint
