// `moe train --data-path`: Megatron indexed datasets made by `moe preprocess` (byte tokens and a
// Hugging Face tokenizer), trained on with --split / blends / evaluation, resumed exactly; and
// the refusals of data flags that do not fit together.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/core/error.h"
#include "moe/data/hf_bpe_tokenizer.h"
#include "moe/data/preprocess.h"
#include "moe/data/tokenizer.h"
#include "moe/train/train_args.h"
#include "moe/train/train_run.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("moe_train_data_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A JSONL corpus with a learnable pattern: 300 short documents.
fs::path write_corpus(const fs::path& dir, const std::string& name, const std::string& word) {
  const fs::path path = dir / (name + ".jsonl");
  std::ofstream out(path);
  for (int d = 0; d < 300; ++d)
    out << "{\"text\": \"" << word << " number " << d % 17 << " sits on the mat, " << word
        << " number " << (d * 7) % 13 << " does not.\"}\n";
  return path;
}

// `moe preprocess` of the corpus: returns the dataset prefix.
std::string preprocess_corpus(const fs::path& jsonl, const fs::path& out_prefix,
                              const data::Tokenizer& tokenizer) {
  data::PreprocessOptions options;
  options.inputs = {jsonl.string()};
  options.output_prefix = out_prefix.string();
  options.append_eod = tokenizer.end_of_document().has_value();
  options.workers = 2;
  return data::preprocess(options, tokenizer, nullptr).output_prefixes.at(0);
}

std::vector<std::string> small_run_args() {
  return {"--cpu", "--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "2",
          "--num-query-groups", "1", "--num-experts", "4", "--moe-ffn-hidden-size", "32",
          "--seq-length", "32", "--micro-batch-size", "4", "--global-batch-size", "8",
          "--lr", "1e-2", "--log-interval", "10", "--sample-tokens", "0"};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string parse_error(const std::vector<std::string>& args) {
  try {
    parse_train_args(args);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TrainDataPath, TrainsOnAPreprocessedCorpusAndResumesExactly) {
  const fs::path dir = fresh_dir("byte");
  const std::string prefix =
      preprocess_corpus(write_corpus(dir, "cats", "cat"), dir / "cats", data::ByteLevelTokenizer());
  const std::vector<std::string> data = {"--data-path", prefix, "--split", "90,10,0",
                                         "--lr-decay-iters", "40", "--lr-warmup-iters", "4"};
  const TrainRunConfig whole_config =
      parse_train_args(small_run_args() + data + std::vector<std::string>{
                           "--train-iters", "40", "--eval-interval", "20", "--eval-iters", "2"});
  EXPECT_EQ(whole_config.model.vocab_size, 384);  // the byte tokens, padded as Megatron pads
  const TrainRunResult whole = run_training(whole_config, standard_train_hooks(), nullptr);
  ASSERT_EQ(whole.losses.size(), 40u);
  EXPECT_LT(whole.losses.back(), whole.losses.front() - 2.0);
  ASSERT_EQ(whole.valid_losses.size(), 2u);
  EXPECT_LT(whole.valid_losses.back().second, whole.losses.front() - 2.0);
  // The indices were cached beside the data, as Megatron caches them.
  EXPECT_TRUE(fs::exists(dir / "cats_text_document" / "cache" / "GPTDataset_indices") ||
              fs::exists(fs::path(prefix).parent_path() / "cache"));

  // 20 + 20 iterations through a checkpoint give the same losses as the 40 straight.
  const std::vector<std::string> half = {"--train-iters", "20", "--eval-iters", "0"};
  run_training(parse_train_args(small_run_args() + data + half +
                                std::vector<std::string>{"--save", (dir / "ckpt").string()}),
               standard_train_hooks(), nullptr);
  const TrainRunResult resumed = run_training(
      parse_train_args(small_run_args() + data +
                       std::vector<std::string>{"--train-iters", "40", "--eval-iters", "0",
                                                "--load", (dir / "ckpt").string()}),
      standard_train_hooks(), nullptr);
  ASSERT_EQ(resumed.losses.size(), 20u);
  for (size_t i = 0; i < 20; ++i)
    EXPECT_EQ(resumed.losses[i], whole.losses[20 + i]) << "iteration " << 21 + i;
}

TEST(TrainDataPath, WeightedBlendOfTwoCorpora) {
  const fs::path dir = fresh_dir("blend");
  const data::ByteLevelTokenizer bytes;
  const std::string cats = preprocess_corpus(write_corpus(dir, "cats", "cat"), dir / "cats", bytes);
  const std::string dogs = preprocess_corpus(write_corpus(dir, "dogs", "dog"), dir / "dogs", bytes);
  const TrainRunConfig config = parse_train_args(
      small_run_args() + std::vector<std::string>{"--data-path", "0.3", cats, "0.7", dogs,
                                                  "--split", "90,10,0", "--train-iters", "10", "--eval-iters", "1",
                                                  "--eval-interval", "5"});
  ASSERT_EQ(config.data_path.size(), 4u);
  const TrainRunResult r = run_training(config, standard_train_hooks(), nullptr);
  EXPECT_EQ(r.iterations, 10);
  for (const double loss : r.losses) EXPECT_TRUE(std::isfinite(loss));
}

// --train-samples sizes the training split as Megatron's get_train_valid_test_num_samples does
// (train_samples itself, not iterations x global batch): a 0.3 / 0.7 blend of 15 samples takes
// ceil(4.5) + ceil(10.5) = 16, where the run's 1 iteration of 8 would take 3 + 6 = 9.
TEST(TrainDataPath, TrainSamplesSizesTheTrainingSplit) {
  const fs::path dir = fresh_dir("samples");
  const data::ByteLevelTokenizer bytes;
  const std::string cats = preprocess_corpus(write_corpus(dir, "cats", "cat"), dir / "cats", bytes);
  const std::string dogs = preprocess_corpus(write_corpus(dir, "dogs", "dog"), dir / "dogs", bytes);
  const TrainRunConfig config = parse_train_args(
      small_run_args() + std::vector<std::string>{"--data-path", "0.3", cats, "0.7", dogs,
                                                  "--split", "90,10,0", "--train-samples", "15",
                                                  "--eval-iters", "1"});
  std::FILE* out = std::tmpfile();
  const TrainRunResult r = run_training(config, standard_train_hooks(), out);
  std::rewind(out);
  std::string text(1 << 16, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), out));
  std::fclose(out);
  EXPECT_EQ(r.iterations, 1);  // 15 // 8
  EXPECT_NE(text.find("data: 16 training samples"), std::string::npos) << text;
}

TEST(TrainDataPath, HuggingFaceTokenizerSizesTheDefaultModel) {
  const fs::path dir = fresh_dir("hf");
  const std::string tokenizer_path = test::fixture_path("tokenizers/llama3");
  const std::unique_ptr<data::Tokenizer> tokenizer =
      data::make_tokenizer("HuggingFaceTokenizer", tokenizer_path);
  const std::string prefix = preprocess_corpus(write_corpus(dir, "cats", "cat"), dir / "cats", *tokenizer);
  const TrainRunConfig config = parse_train_args(
      small_run_args() + std::vector<std::string>{"--data-path", prefix, "--tokenizer-type",
                                                  "HuggingFaceTokenizer", "--tokenizer-model",
                                                  tokenizer_path, "--split", "90,10,0",
                                                  "--train-iters", "6",
                                                  "--eval-iters", "0"});
  const int64_t V = tokenizer->vocab_size();
  EXPECT_EQ(config.model.vocab_size, (V + 127) / 128 * 128);
  TrainRunConfig with_sample = config;
  with_sample.sample_tokens = 12;
  std::FILE* out = std::tmpfile();
  const TrainRunResult r = run_training(with_sample, standard_train_hooks(), out);
  std::rewind(out);
  std::string text(1 << 16, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), out));
  std::fclose(out);
  // The sample is generated and decoded through the corpus's tokenizer.
  EXPECT_NE(text.find("sample (12 tokens at most"), std::string::npos) << text;
  EXPECT_EQ(r.iterations, 6);
  EXPECT_NEAR(r.losses.front(), std::log(double(config.model.vocab_size)), 0.5);

  // A model whose vocabulary cannot hold the tokenizer's ids is refused, naming both.
  const std::string small = parse_error(
      small_run_args() + std::vector<std::string>{"--data-path", prefix, "--tokenizer-model",
                                                  tokenizer_path, "--vocab-size", "300"});
  EXPECT_NE(small.find("--vocab-size 300"), std::string::npos) << small;
  EXPECT_NE(small.find(std::to_string(V)), std::string::npos) << small;
}

TEST(TrainDataPath, DataFlagsThatDoNotFitAreRefused) {
  std::string e = parse_error(small_run_args() + std::vector<std::string>{"--split", "90,10,0"});
  EXPECT_NE(e.find("--split needs --data-path"), std::string::npos) << e;
  e = parse_error(small_run_args() + std::vector<std::string>{"--tokenizer-model", "x.json"});
  EXPECT_NE(e.find("--data-path"), std::string::npos) << e;
  e = parse_error(small_run_args() + std::vector<std::string>{"--data-path", "a", "--split", "1,,2"});
  EXPECT_NE(e.find("split"), std::string::npos) << e;
  e = parse_error(small_run_args() +
                  std::vector<std::string>{"--data-path", "a", "--tokenizer-type", "SentencePiece"});
  EXPECT_NE(e.find("--tokenizer-type"), std::string::npos) << e;
  // A prefix with no files behind it is refused when the run opens it, naming the file.
  const TrainRunConfig missing = parse_train_args(
      small_run_args() + std::vector<std::string>{"--data-path", "/nonexistent/corpus",
                                                  "--train-iters", "2"});
  try {
    run_training(missing, standard_train_hooks(), nullptr);
    ADD_FAILURE() << "a missing dataset trained";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("/nonexistent/corpus"), std::string::npos) << err.what();
  }
}

}  // namespace
}  // namespace moe::train
