// `--load` resolution for moe generate: a model folder itself, or a training save folder whose
// latest_checkpointed_iteration.txt names iter_NNNNNNN, read and verified exactly as
// `moe train --load` reads them; errors name what is wrong.
#include "moe/train/model_folder.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "moe/checkpoint/model_io.h"
#include "moe/core/error.h"
#include "moe/nn/model_zoo.h"
#include "moe/train/batch_source.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/trainer.h"
#include "nn/gpt_test_util.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

class ModelFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("moe_model_folder_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  static void write(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }
  std::string expect_error(const std::string& load) {
    try {
      (void)train::resolve_model_folder(load);
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "no error for " << load;
    return "";
  }
  fs::path root_;
};

TEST_F(ModelFolder, AModelFolderIsItself) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::GPTModel model(nn::model_zoo("mixtral-tiny"), DType::f32, Device::cpu(), seed);
  const fs::path folder = root_ / "converted";
  checkpoint::save_model(folder.string(), model);
  EXPECT_EQ(train::resolve_model_folder(folder.string()), folder.string());
  auto loaded = checkpoint::load_model(folder.string(), DType::f32, Device::cpu());
  const Tensor ids = test::random_tokens(4, 1, model.config().vocab_size, seed + 1);
  EXPECT_TRUE(test::equal(loaded->logits(ids), model.logits(ids)));
}

// A save folder's iteration folders are training checkpoints: without their manifest (bare
// model files under iter_NNNNNNN, a save that lost its manifest.json) `moe train --load`
// refuses them, and so does `moe generate`, with the same message; nothing is read unverified.
TEST_F(ModelFolder, ACheckpointWithoutItsManifestIsRefusedAsTrainRefusesIt) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::GPTModel model(nn::model_zoo("mixtral-tiny"), DType::f32, Device::cpu(), seed);
  const fs::path save = root_ / "save";
  fs::create_directories(save);
  checkpoint::save_model((save / "iter_0000005").string(), model);
  write(save / train::kTrackerFileName, "5\n");
  const std::string generate_error = expect_error(save.string());
  EXPECT_NE(generate_error.find("iter_0000005 has no manifest.json"), std::string::npos)
      << generate_error;
  EXPECT_NE(expect_error((save / "iter_0000005").string()).find("no manifest.json"),
            std::string::npos);
  std::string train_error;
  try {
    (void)train::load_training_checkpoint(save.string(), model, nullptr);
  } catch (const Error& e) {
    train_error = e.what();
  }
  EXPECT_EQ(generate_error, train_error);
  // Iteration folders without the tracker: the same error as `moe train` gives.
  fs::remove(save / train::kTrackerFileName);
  EXPECT_NE(expect_error(save.string()).find("holds iteration folders (iter_0000005"),
            std::string::npos);
}

// A folder written by save_training_checkpoint is checked against its manifest: a changed
// model file is refused, naming it, before any weights are read.
TEST_F(ModelFolder, TrainingCheckpointsAreVerified) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::GPTModel model(nn::model_zoo("mixtral-tiny"), DType::f32, Device::cpu(), seed);
  std::vector<int32_t> tokens(64);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i % 200);
  train::TokenArraySource data(tokens, 8, seed, /*shuffle=*/false);
  train::TrainConfig config;
  config.micro_batch_size = 1;
  config.global_batch_size = 1;
  config.seq_length = 8;
  config.train_iters = 1;
  train::Trainer trainer(model, config, data);
  const fs::path save = root_ / "save";
  train::save_training_checkpoint(save.string(), model, trainer, nlohmann::json::object());
  const fs::path folder = save / train::checkpoint_folder_name(0);
  EXPECT_EQ(fs::path(train::resolve_model_folder(save.string())), folder);
  EXPECT_EQ(fs::path(train::resolve_model_folder(folder.string())), folder);
  // The iteration folder loads as the model it holds.
  auto loaded = checkpoint::load_model(folder.string(), DType::f32, Device::cpu());
  const Tensor ids = test::random_tokens(4, 1, model.config().vocab_size, seed + 1);
  EXPECT_TRUE(test::equal(loaded->logits(ids), model.logits(ids)));
  std::ofstream(folder / "model.safetensors", std::ios::app) << "x";
  EXPECT_NE(expect_error(save.string()).find("model.safetensors"), std::string::npos);
  EXPECT_NE(expect_error(folder.string()).find("model.safetensors"), std::string::npos);
  // A missing manifest is refused too (it used to load unverified).
  fs::remove(folder / "manifest.json");
  EXPECT_NE(expect_error(save.string()).find("no manifest.json"), std::string::npos);
  EXPECT_NE(expect_error(folder.string()).find("no manifest.json"), std::string::npos);
}

TEST_F(ModelFolder, BadFoldersAreErrorsNamingTheProblem) {
  EXPECT_NE(expect_error((root_ / "missing").string()).find("is not a folder"), std::string::npos);
  EXPECT_NE(expect_error(root_.string()).find("neither a model folder"), std::string::npos);
  write(root_ / train::kTrackerFileName, "seven");
  EXPECT_NE(expect_error(root_.string()).find("not an iteration number"), std::string::npos);
  write(root_ / train::kTrackerFileName, "7");
  EXPECT_NE(expect_error(root_.string()).find("iter_0000007 does not exist"), std::string::npos);
  fs::create_directories(root_ / "iter_0000007");
  EXPECT_NE(expect_error(root_.string()).find("iter_0000007 has no manifest.json"),
            std::string::npos);
}

TEST_F(ModelFolder, TokenizerFilesAreFound) {
  EXPECT_TRUE(train::tokenizer_files(root_.string()).empty());
  write(root_ / "tokenizer.json", "{}");
  write(root_ / "tokenizer_config.json", "{}");
  EXPECT_EQ(train::tokenizer_files(root_.string()),
            (std::vector<std::string>{"tokenizer.json", "tokenizer_config.json"}));
}

}  // namespace
}  // namespace moe
