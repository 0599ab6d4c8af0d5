// `moe train` end to end on the CPU: flags -> a short run on the built-in corpus whose loss
// falls, with its JSONL metrics, TensorBoard files, evaluation, checkpoint and text sample; and
// the refusals that happen before anything trains.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "moe/core/device.h"
#include "moe/core/error.h"
#include "moe/train/train_args.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/train_run.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("moe_train_run_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  return dir;
}

std::string error_of(const TrainRunConfig& config, const TrainHooks& hooks = {}) {
  try {
    run_training(config, hooks, nullptr);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A small and quick run: 1 layer of width 32, 4 experts.
std::vector<std::string> small_run_args() {
  return {"--cpu", "--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "2",
          "--num-query-groups", "1", "--num-experts", "4", "--moe-ffn-hidden-size", "32",
          "--seq-length", "32", "--micro-batch-size", "4", "--global-batch-size", "8",
          "--train-iters", "40", "--lr", "1e-2", "--log-interval", "10", "--eval-interval", "20",
          "--eval-iters", "1"};
}

TEST(TrainRun, RefusesWhatThisBuildDoesNotWireBeforeTraining) {
  TrainRunConfig c = parse_train_args({"--save", "/tmp/never"});
  EXPECT_NE(error_of(c).find("--save is not supported by this build yet"), std::string::npos);
  c = parse_train_args({"--load", "/tmp/never", "--no-load-optim"});
  EXPECT_NE(error_of(c).find("--load is not supported by this build yet"), std::string::npos);
  if (cuda_device_count() == 0) {
    c = parse_train_args({"--bf16"});
    EXPECT_NE(error_of(c).find("--bf16 trains on a GPU"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists("/tmp/never"));
}

// --moe-per-layer-logging: every log point carries each MoE layer's aux loss and expert load,
// in the JSONL file and on the log.
TEST(TrainRun, PerLayerMoELogging) {
  const fs::path dir = fresh_dir("per_layer");
  std::vector<std::string> args = small_run_args();
  args[args.size() - 9] = "10";  // --train-iters 10
  for (const std::string& a :
       {std::string("--moe-per-layer-logging"), std::string("--moe-aux-loss-coeff"),
        std::string("1e-2"), std::string("--metrics-jsonl"), (dir / "m.jsonl").string(),
        std::string("--sample-tokens"), std::string("0")})
    args.push_back(a);
  const TrainRunConfig config = parse_train_args(args);
  std::FILE* out = std::tmpfile();
  run_training(config, standard_train_hooks(), out);
  std::ifstream jsonl(dir / "m.jsonl");
  std::string line;
  int with_layers = 0;
  while (std::getline(jsonl, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (!j.contains("moe_layers")) continue;
    ++with_layers;
    ASSERT_EQ(j["moe_layers"].size(), 1u);  // one layer, MoE
    EXPECT_GT(j["moe_layers"][0]["aux_loss"].get<double>(), 0.0);
  }
  EXPECT_EQ(with_layers, 1);  // one log point at iteration 10
  std::rewind(out);
  std::string text;
  char buffer[4096];
  while (const size_t n = std::fread(buffer, 1, sizeof(buffer), out)) text.append(buffer, n);
  std::fclose(out);
  EXPECT_NE(text.find("expert load min/max/cv"), std::string::npos) << text;
}

TEST(TrainRun, ShortRunLearnsLogsSavesAndSamples) {
  const fs::path dir = fresh_dir("short");
  std::vector<std::string> args = small_run_args();
  for (const std::string& a : {std::string("--save"), (dir / "save").string(),
                               std::string("--tensorboard-dir"), (dir / "tb").string(),
                               std::string("--sample-tokens"), std::string("40")})
    args.push_back(a);
  const TrainRunConfig config = parse_train_args(args);
  std::FILE* out = std::tmpfile();
  const TrainRunResult r = run_training(config, standard_train_hooks(), out);

  ASSERT_EQ(r.iterations, 40);
  ASSERT_EQ(r.losses.size(), 40u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += r.losses[static_cast<size_t>(i)] / 5;
  for (int i = 35; i < 40; ++i) last += r.losses[static_cast<size_t>(i)] / 5;
  EXPECT_NEAR(first, std::log(384.0), 0.3);  // untrained: uniform over the padded vocabulary
  EXPECT_LT(last, first - 1.5) << "first " << first << " last " << last;
  ASSERT_EQ(r.valid_losses.size(), 2u);  // iteration 20 and the end
  EXPECT_EQ(r.valid_losses[0].first, 20);
  EXPECT_EQ(r.valid_losses[1].first, 40);
  EXPECT_LT(r.valid_losses[1].second, first - 1.0);

  // Metrics beside the checkpoint: 4 log points, 2 evaluations, notes (save, sample).
  std::ifstream jsonl(dir / "save" / "metrics.jsonl");
  int logs = 0, evals = 0;
  std::string line;
  while (std::getline(jsonl, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    logs += j.contains("lm_loss");
    evals += j.contains("valid_lm_loss");
  }
  EXPECT_EQ(logs, 4);
  EXPECT_EQ(evals, 2);
  EXPECT_EQ(latest_checkpoint_iteration((dir / "save").string()), 40);
  EXPECT_FALSE(fs::is_empty(dir / "tb"));

  std::rewind(out);
  std::string text(1 << 16, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), out));
  std::fclose(out);
  EXPECT_NE(text.find("iteration       40/      40 |"), std::string::npos) << text;
  EXPECT_NE(text.find("saved checkpoint"), std::string::npos) << text;
  EXPECT_NE(text.find("sample ("), std::string::npos) << text;
}

TEST(TrainRun, ResumingFromTheSaveContinuesTheRun) {
  // 20 iterations saved at 10 and resumed from there reproduce the uninterrupted losses.
  const fs::path dir = fresh_dir("resume");
  std::vector<std::string> base = small_run_args();
  base.insert(base.end(), {"--train-iters", "20", "--eval-iters", "0", "--sample-tokens", "0"});
  std::vector<std::string> whole = base;
  std::vector<std::string> first = base;
  first.insert(first.end(), {"--train-iters", "10", "--save", (dir / "save").string()});
  // The schedule must be the 20-iteration one: decay over 20 and warm-up 2 either way.
  first.insert(first.end(), {"--lr-decay-iters", "20", "--lr-warmup-iters", "2"});
  whole.insert(whole.end(), {"--lr-decay-iters", "20", "--lr-warmup-iters", "2"});
  const TrainRunResult reference = run_training(parse_train_args(whole), standard_train_hooks(), nullptr);
  run_training(parse_train_args(first), standard_train_hooks(), nullptr);
  std::vector<std::string> second = base;
  second.insert(second.end(), {"--load", (dir / "save").string(), "--lr-decay-iters", "20",
                               "--lr-warmup-iters", "2"});
  const TrainRunResult resumed = run_training(parse_train_args(second), standard_train_hooks(), nullptr);
  ASSERT_EQ(resumed.iterations, 10);
  for (size_t i = 0; i < 10; ++i)
    EXPECT_EQ(resumed.losses[i], reference.losses[10 + i]) << "iteration " << 11 + i;
}

// With router input jitter, the routers' draw counters travel in the checkpoint: the resumed
// run draws the jitter the uninterrupted one drew.
TEST(TrainRun, ResumingWithRouterJitterDrawsTheSameJitter) {
  const fs::path dir = fresh_dir("resume_jitter");
  std::vector<std::string> base = small_run_args();
  base.insert(base.end(), {"--eval-iters", "0", "--sample-tokens", "0", "--lr-decay-iters", "12",
                           "--lr-warmup-iters", "2", "--moe-input-jitter-eps", "0.3"});
  std::vector<std::string> whole = base, first = base, second = base;
  whole.insert(whole.end(), {"--train-iters", "12"});
  first.insert(first.end(), {"--train-iters", "6", "--save", (dir / "save").string()});
  second.insert(second.end(), {"--train-iters", "12", "--load", (dir / "save").string()});
  const TrainRunResult reference = run_training(parse_train_args(whole), standard_train_hooks(), nullptr);
  run_training(parse_train_args(first), standard_train_hooks(), nullptr);
  std::FILE* out = std::tmpfile();
  const TrainRunResult resumed = run_training(parse_train_args(second), standard_train_hooks(), out);
  std::rewind(out);
  std::string text(1 << 16, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), out));
  std::fclose(out);
  EXPECT_EQ(text.find("draws other jitter"), std::string::npos) << text;  // no warning
  ASSERT_EQ(resumed.iterations, 6);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(resumed.losses[i], reference.losses[6 + i]) << "iteration " << 7 + i;
}

}  // namespace
}  // namespace moe::train
