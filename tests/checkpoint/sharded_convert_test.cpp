// `moe convert --from moecore --to hf` of a sharded checkpoint (an iteration folder of a
// parallel run: index.json + shard files + model_config.json, sharded_tensor_source.h): written
// here by two "ranks" in one process (expert tensors cut by experts and by the FFN dim, the
// embedding as flat ranges, optimizer state next to the weights), it converts to exactly the
// Hugging Face folder of the same model saved by one rank, and loads as that model.
#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/checkpoint_testing.h"
#include "moe/checkpoint/box_copy.h"
#include "moe/checkpoint/checkpoint_convert.h"
#include "moe/checkpoint/model_io.h"
#include "moe/checkpoint/sharded_checkpoint.h"
#include "moe/checkpoint/sharded_tensor_source.h"
#include "moe/core/json_file.h"
#include "moe/io/atomic_file.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"
#include "nn/gpt_test_util.h"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;
using namespace moe::checkpoint::testing;
using io::testing::fails_with;
using CheckpointShardedConvert = io::testing::ScratchFolder;

// The box (offset, shape) of `full` read row-major in `view`.
Tensor box_of(const Tensor& full, const Shape& view, const std::vector<int64_t>& offset,
              const Shape& shape) {
  Tensor out = Tensor::empty(shape, full.dtype());
  copy_box(full.raw(), Box{std::vector<int64_t>(view.size(), 0), view}, out.raw(),
           Box{offset, shape}, dtype_size(full.dtype()));
  return out;
}

// Rank `rank` of 2's pieces of `name` (global tensor `full`): routed experts' fc1 split by the
// FFN dim in its [E, 2, F, H] view, fc2 by experts, the embedding as two flat ranges of odd
// length, every other tensor whole on rank 0 with an "exp_avg" optimizer state beside it.
void add_pieces(const std::string& name, const Tensor& full, int rank,
                std::vector<ShardPiece>& pieces) {
  const Shape g = full.shape();
  if (name.ends_with("mlp.experts.gate_up_proj")) {
    const int64_t E = g[0], F = g[1] / 2, H = g[2];
    const Shape view{E, 2, F, H}, box{E, 2, F / 2, H};
    const std::vector<int64_t> offset{0, 0, rank * F / 2, 0};
    pieces.push_back({name, {g, view, offset, box}, box_of(full, view, offset, box)});
  } else if (name.ends_with("mlp.experts.down_proj")) {
    const Shape box{g[0] / 2, g[1], g[2]};
    const std::vector<int64_t> offset{rank * g[0] / 2, 0, 0};
    pieces.push_back({name, {g, g, offset, box}, box_of(full, g, offset, box)});
  } else if (name == "model.embed_tokens.weight") {
    const int64_t n = full.numel(), cut = n / 2 + 3;
    const int64_t begin = rank == 0 ? 0 : cut, end = rank == 0 ? cut : n;
    TensorSlice slice{g};
    slice.begin = begin;
    slice.end = end;
    pieces.push_back({name, slice, full.reshape({n}).rows(begin, end - begin).clone()});
  } else if (rank == 0) {
    pieces.push_back({name, {g}, full});
    pieces.push_back({name + ".exp_avg", {g}, Tensor::zeros(g, DType::f32)});
  }
}

TensorMap tensors_of(nn::GPTModel& model) {
  TensorMap out;
  for (nn::Parameter* p : model.parameters()) out[p->name] = p->value;
  for (const nn::NamedBuffer& b : model.buffers()) out[b.name] = *b.value;
  return out;
}

TEST_F(CheckpointShardedConvert, ConvertsAsTheOneRankSaveOfTheSameModel) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const char* zoo : {"qwen3-moe-tiny", "deepseek-v3-tiny"}) {
    SCOPED_TRACE(zoo);
    nn::ModelConfig config = nn::model_zoo(zoo);
    if (config.family == "deepseek_v3")  // its shared expert is one routed expert's size
      config.moe.moe_shared_expert_intermediate_size = 24;
    config.moe.moe_ffn_hidden_size = 24;
    config.validate();
    nn::GPTModel model(config, DType::f32, Device::cpu(), seed);
    uint64_t s = seed;
    for (nn::Parameter* p : model.parameters())
      p->value.copy_(test::random_normal(p->value.shape(), DType::f32, ++s, Device::cpu(), 0.3));
    for (const nn::NamedBuffer& b : model.buffers())
      b.value->copy_(test::random_normal(b.value->shape(), DType::f32, ++s, Device::cpu(), 0.3));
    const std::string tag = zoo;
    save_model(path(tag + "-one-rank"), model);

    const fs::path sharded = dir_ / (tag + "-sharded");
    fs::create_directories(sharded);
    for (int rank = 0; rank < 2; ++rank) {
      std::vector<ShardPiece> pieces;
      for (nn::Parameter* p : model.parameters()) add_pieces(p->name, p->value, rank, pieces);
      for (const nn::NamedBuffer& b : model.buffers()) add_pieces(b.name, *b.value, rank, pieces);
      write_shards(sharded.string(), rank, 2, pieces);
    }
    write_index(sharded.string(), 2);
    io::write_file_atomically((sharded / "model_config.json").string(),
                              nn::model_config_to_json(config).dump(2));

    const ShardedTensorSource source(sharded.string());
    for (const std::string& name : source.names())
      EXPECT_FALSE(name.ends_with(".exp_avg")) << name << " is optimizer state";
    EXPECT_TRUE(source.contains("model.embed_tokens.weight"));

    ConvertCheckpointOptions options;
    options.from = CheckpointFormat::moecore;
    options.to = CheckpointFormat::hf;
    options.max_shard_bytes = 60'000;
    const ConvertSummary a = convert_checkpoint(sharded.string(), path(tag + "-hf-a"), options);
    const ConvertSummary b =
        convert_checkpoint(path(tag + "-one-rank"), path(tag + "-hf-b"), options);
    EXPECT_EQ(a.tensors_read, b.tensors_read);
    EXPECT_EQ(a.tensors_written, b.tensors_written);
    EXPECT_GT(a.files.size(), 1u);
    EXPECT_TRUE(same_tensors(read_all(path(tag + "-hf-a")), read_all(path(tag + "-hf-b"))));
    EXPECT_EQ(read_json_file(path(tag + "-hf-a") + "/config.json", "config"),
              read_json_file(path(tag + "-hf-b") + "/config.json", "config"));

    // A sharded checkpoint is a moecore model folder to load_model as well.
    auto loaded = load_model(sharded.string(), DType::f32, Device::cpu());
    auto expected = load_model(path(tag + "-one-rank"), DType::f32, Device::cpu());
    EXPECT_TRUE(same_tensors(tensors_of(*loaded), tensors_of(*expected)));
    const Tensor ids = test::random_tokens(5, 2, config.vocab_size, seed);
    EXPECT_TRUE(io::testing::same_bytes(loaded->logits(ids), expected->logits(ids)));
  }
}

TEST_F(CheckpointShardedConvert, ATensorMissingFromTheShardsIsNamed) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("qwen3-moe-tiny");
  nn::GPTModel model(config, DType::f32, Device::cpu(), seed);
  std::vector<ShardPiece> pieces;
  for (nn::Parameter* p : model.parameters())
    if (p->name != "model.norm.weight") pieces.push_back({p->name, {p->value.shape()}, p->value});
  fs::create_directories(dir_ / "ckpt");
  write_shards(path("ckpt"), 0, 1, pieces);
  write_index(path("ckpt"), 1);
  io::write_file_atomically(path("ckpt/model_config.json"),
                            nn::model_config_to_json(config).dump(2));
  ConvertCheckpointOptions options;
  options.from = CheckpointFormat::moecore;
  options.to = CheckpointFormat::hf;
  EXPECT_TRUE(fails_with([&] { convert_checkpoint(path("ckpt"), path("out-hf"), options); },
                         {"missing tensor model.norm.weight", "sharded checkpoint", path("ckpt")}));
  EXPECT_FALSE(fs::exists(dir_ / "out-hf"));
}

}  // namespace
}  // namespace moe::checkpoint
