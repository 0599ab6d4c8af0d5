// --model of a model folder (a Hugging Face folder: config.json; or moecore's), of an HF
// config.json, and no --model with --load of a model folder: the run's model is the folder's
// (`moe train --load HF_DIR --finetune` fine-tunes a Hugging Face checkpoint as it is); a given
// --model wins; and the fine-tuning run trains.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "common/check.h"
#include "moe/checkpoint/model_io.h"
#include "moe/nn/model_config_json.h"
#include "moe/train/train_args.h"
#include "moe/train/train_run.h"

namespace moe::train {
namespace {

std::string folder() { return test::fixture_path("hf/mixtral"); }

nlohmann::json config_of(const nn::ModelConfig& c) { return nn::model_config_to_json(c); }

TEST(TrainArgsModelFolder, ModelComesFromTheFolder) {
  nn::ModelConfig expected =
      checkpoint::read_model_config(folder(), checkpoint::CheckpointFormat::hf);
  // Read for inference, the folder keeps its own dropout (its config.json's attention_dropout
  // 0.0); a run with flags takes Megatron's 0.1 unless they are given.
  EXPECT_EQ(expected.attention_dropout, 0.0);
  EXPECT_EQ(expected.hidden_dropout, 0.0);
  expected.attention_dropout = expected.hidden_dropout = 0.1;
  const TrainRunConfig by_folder = parse_train_args({"--model", folder(), "--lr", "1e-4"});
  EXPECT_EQ(config_of(by_folder.model), config_of(expected));
  EXPECT_FALSE(by_folder.model_from_load);
  const TrainRunConfig by_file =
      parse_train_args({"--model", folder() + "/config.json", "--lr", "1e-4"});
  EXPECT_EQ(config_of(by_file.model), config_of(expected));

  // No --model, --load of the folder: its model; later model flags still override it.
  const TrainRunConfig loaded =
      parse_train_args({"--load", folder(), "--finetune", "--lr", "1e-4", "--num-layers", "1"});
  EXPECT_TRUE(loaded.model_from_load);
  EXPECT_EQ(loaded.model.hidden_size, expected.hidden_size);
  EXPECT_EQ(loaded.model.moe.num_experts, expected.moe.num_experts);
  EXPECT_EQ(loaded.model.num_layers, 1);
  EXPECT_NE(describe(loaded).find("the --load model folder " + folder()), std::string::npos)
      << describe(loaded);
  // `--load HF_DIR --finetune`: Megatron's dropout, said in the start-up description.
  EXPECT_EQ(loaded.model.attention_dropout, 0.1);
  EXPECT_EQ(loaded.model.hidden_dropout, 0.1);
  EXPECT_NE(describe(loaded).find("dropout 0.1 (Megatron's default) attention, 0.1 (Megatron's "
                                  "default) hidden"),
            std::string::npos)
      << describe(loaded);
  const TrainRunConfig without = parse_train_args(
      {"--load", folder(), "--finetune", "--lr", "1e-4", "--attention-dropout", "0",
       "--hidden-dropout", "0.05"});
  EXPECT_EQ(without.model.attention_dropout, 0.0);
  EXPECT_EQ(without.model.hidden_dropout, 0.05);
  EXPECT_NE(describe(without).find("dropout 0 attention, 0.05 hidden"), std::string::npos)
      << describe(without);

  // A given --model wins over the folder.
  const TrainRunConfig named =
      parse_train_args({"--model", "default", "--load", folder(), "--lr", "1e-4"});
  EXPECT_FALSE(named.model_from_load);
  EXPECT_NE(config_of(named.model), config_of(expected));
}

TEST(TrainArgsModelFolder, FineTunesAHuggingFaceFolderWithoutModel) {
  const TrainRunConfig c = parse_train_args(
      {"--cpu", "--load", folder(), "--finetune", "--lr", "1e-4", "--train-iters", "2",
       "--seq-length", "16", "--micro-batch-size", "2", "--sample-tokens", "0",
       "--eval-iters", "0"});
  const TrainRunResult r = run_training(c, standard_train_hooks(), nullptr);
  ASSERT_EQ(r.losses.size(), 2u);
  for (double loss : r.losses) EXPECT_TRUE(std::isfinite(loss)) << loss;
}

}  // namespace
}  // namespace moe::train
