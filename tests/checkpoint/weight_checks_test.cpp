// Loading model weights refuses what would train or evaluate to garbage without a word: an
// integer tensor where a float weight belongs (an i32 norm weight once gave a loss of 1e9), and
// NaN / Inf weights (once `lm loss: nan` with exit status 0). Each error names the tensor (the
// Hugging Face part of a fused one), its file, and the dtype or the element.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "checkpoint/checkpoint_testing.h"
#include "moe/checkpoint/checkpoint_convert.h"
#include "moe/checkpoint/model_io.h"
#include "moe/nn/model_zoo.h"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;
using namespace moe::checkpoint::testing;
using io::testing::fails_with;
using CheckpointWeightChecks = io::testing::ScratchFolder;

// Element `i` of a CPU float tensor set to `value` (through its dtype's bits).
void poke(Tensor& t, int64_t i, float value) {
  const Tensor one = Tensor::from_vector<float>({value}, {1}).to(t.dtype());
  const size_t size = dtype_size(t.dtype());
  std::memcpy(static_cast<char*>(t.raw()) + static_cast<size_t>(i) * size, one.raw(), size);
}

TEST_F(CheckpointWeightChecks, IntegerWeightsAreRefusedNamingTheTensorAndDtype) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("mixtral-tiny");
  TensorMap tensors = random_hf_tensors(config, DType::f32, seed);
  const Shape norm_shape = tensors.at("model.norm.weight").shape();
  tensors["model.norm.weight"] = Tensor::zeros(norm_shape, DType::i32);
  write_hf_folder(dir_ / "int", config, tensors, DType::f32, std::nullopt, 1 << 30);
  EXPECT_TRUE(fails_with([&] { load_model(path("int"), DType::f32, Device::cpu()); },
                         {"model.norm.weight", "model.safetensors", "i32", "float dtype"}));
  // `moe convert` refuses it too, rather than writing a moecore folder that holds it.
  ConvertCheckpointOptions options;
  options.from = CheckpointFormat::hf;
  options.to = CheckpointFormat::moecore;
  EXPECT_TRUE(fails_with([&] { convert_checkpoint(path("int"), path("int-moe"), options); },
                         {"model.norm.weight", "i32"}));
  EXPECT_FALSE(fs::exists(dir_ / "int-moe"));

  // A fused part (an expert's w1) as i64.
  TensorMap part = random_hf_tensors(config, DType::f32, seed);
  const std::string w1 = "model.layers.0.block_sparse_moe.experts.1.w1.weight";
  part[w1] = Tensor::zeros(part.at(w1).shape(), DType::i64);
  write_hf_folder(dir_ / "part", config, part, DType::f32);
  EXPECT_TRUE(fails_with([&] { load_model(path("part"), DType::f32, Device::cpu()); },
                         {w1, "i64", "float dtype"}));
}

TEST_F(CheckpointWeightChecks, NonFiniteWeightsAreRefusedNamingTheFirstTensor) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("mixtral-tiny");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const std::string tag = dtype_name(dtype);
    // An unfused tensor: its own name and file.
    TensorMap norm = random_hf_tensors(config, dtype, seed);
    poke(norm["model.norm.weight"], 5, inf);
    write_hf_folder(dir_ / (tag + "-norm"), config, norm, dtype, std::nullopt, 1 << 30);
    EXPECT_TRUE(fails_with([&] { load_model(path(tag + "-norm"), DType::f32, Device::cpu()); },
                           {"model.norm.weight", "model.safetensors", "element 5", "non-finite"}));
    // A part of a fused tensor: the part's Hugging Face name, not only the fused one.
    TensorMap expert = random_hf_tensors(config, dtype, seed);
    const std::string w2 = "model.layers.1.block_sparse_moe.experts.2.w2.weight";
    poke(expert[w2], 7, nan);
    write_hf_folder(dir_ / (tag + "-expert"), config, expert, dtype);
    EXPECT_TRUE(fails_with([&] { load_model(path(tag + "-expert"), DType::f32, Device::cpu()); },
                           {w2, "element 7", "non-finite"}));
  }
  // A moecore folder: the moecore name.
  nn::GPTModel model(config, DType::f32, Device::cpu(), seed);
  nn::Parameter* first = model.parameters().front();
  Tensor value = first->value;
  poke(value, 0, -inf);
  save_model(path("moecore"), model);
  EXPECT_TRUE(fails_with([&] { load_model(path("moecore"), DType::f32, Device::cpu()); },
                         {first->name, "element 0", "non-finite"}));
}

}  // namespace
}  // namespace moe::checkpoint
