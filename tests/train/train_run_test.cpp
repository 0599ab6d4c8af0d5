// `moe train` end to end on the CPU: flags -> a short run on the built-in corpus whose loss
// falls, with its JSONL metrics, TensorBoard files, evaluation, checkpoint and text sample; and
// the refusals that happen before anything trains.
#include "moe/train/train_run.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_testing.h"
#include "common/printed_text.h"
#include "moe/checkpoint/model_io.h"
#include "moe/core/device.h"
#include "moe/core/error.h"
#include "moe/train/interrupt_report.h"
#include "moe/train/train_args.h"
#include "moe/train/train_checkpoint.h"
#include "train/megatron_scheduler_reference.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("moe_train_run_" + std::to_string(getpid()) + "_" + name);
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

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A small and quick run: 1 layer of width 32, 4 experts.
std::vector<std::string> small_run_args() {
  return {"--cpu", "--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "2",
          "--num-query-groups", "1", "--num-experts", "4", "--moe-ffn-hidden-size", "32",
          "--seq-length", "32", "--micro-batch-size", "4", "--global-batch-size", "8",
          "--train-iters", "40", "--lr", "1e-2", "--log-interval", "10", "--eval-interval", "20",
          "--eval-iters", "1",
          // The schedule and optimizer these tests were tuned with (the default run's), given
          // explicitly: with flags, absent ones would take Megatron-LM's defaults.
          "--min-lr", "1e-3", "--lr-decay-style", "cosine", "--weight-decay", "0.1", "--adam-beta2",
          "0.95", "--nan-action", "skip"};
}

TEST(TrainRun, RefusesWhatItCannotDoBeforeTraining) {
  // Checkpoint flags without the checkpoint hooks (a caller that passed none).
  TrainRunConfig c = parse_train_args({"--save", "/tmp/never", "--lr", "1e-3"});
  EXPECT_NE(error_of(c).find("--save needs the checkpoint hooks"), std::string::npos);
  c = parse_train_args({"--load", "/tmp/never", "--no-load-optim", "--lr", "1e-3"});
  EXPECT_NE(error_of(c).find("--load needs the checkpoint hooks"), std::string::npos);
  if (cuda_device_count() == 0) {
    c = parse_train_args({"--bf16", "--lr", "1e-3"});
    EXPECT_NE(error_of(c).find("--bf16 trains on a GPU"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists("/tmp/never"));
}

// --moe-per-layer-logging: every log point carries each MoE layer's aux loss and expert load,
// in the JSONL file and on the log.
TEST(TrainRun, PerLayerMoELogging) {
  const fs::path dir = fresh_dir("per_layer");
  std::vector<std::string> args = small_run_args();
  *(std::find(args.begin(), args.end(), "--train-iters") + 1) = "10";  // --train-iters 10
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
  const std::string text = test::printed_text(out);
  EXPECT_NE(text.find("expert load min/max/cv"), std::string::npos) << text;
}

// --profile on the CPU: the window's steps as a summary per stage and a Chrome trace holding
// the stages a step passes through; the losses are the unprofiled run's; a rank the run does
// not have is refused.
TEST(TrainRun, ProfileWritesTheWindowsStagesAndChangesNothing) {
  const fs::path dir = fresh_dir("profile");
  std::vector<std::string> args = small_run_args();
  *(std::find(args.begin(), args.end(), "--train-iters") + 1) = "3";
  args.insert(args.end(), {"--sample-tokens", "0", "--eval-iters", "0"});
  const TrainRunResult plain = run_training(parse_train_args(args), {}, nullptr);
  std::vector<std::string> profiled_args = args;
  profiled_args.insert(profiled_args.end(),
                       {"--profile", "--profile-step-start", "1", "--profile-step-end", "2",
                        "--profile-dir", dir.string()});
  std::FILE* out = std::tmpfile();
  const TrainRunResult profiled = run_training(parse_train_args(profiled_args), {}, out);
  EXPECT_EQ(profiled.losses, plain.losses);
  const std::string text = test::printed_text(out);
  EXPECT_NE(text.find("profile of iteration 2 on rank 0: 1 step in"), std::string::npos) << text;
  const nlohmann::json trace = nlohmann::json::parse(read_text(dir / "rank-0.json"));
  std::map<std::string, int> calls;
  for (const nlohmann::json& e : trace.at("traceEvents"))
    if (e.at("ph") == "X") ++calls[e.at("name").get<std::string>()];
  EXPECT_EQ(calls["train_step"], 1);
  for (const char* stage : {"forward", "backward", "embedding", "layer", "attention", "moe.route",
                            "moe.dispatch", "moe.experts", "moe.combine", "output_layer",
                            "layer.bwd", "moe.experts.bwd", "embedding.bwd", "losses", "optimizer"})
    EXPECT_GE(calls[stage], 1) << stage;
  EXPECT_EQ(calls["layer"], 2);  // 2 micro-batches of the one layer
  EXPECT_TRUE(fs::exists(dir / "rank-0.txt"));

  profiled_args.insert(profiled_args.end(), {"--profile-ranks", "1"});
  EXPECT_NE(error_of(parse_train_args(profiled_args)).find("--profile-ranks 1: the run has 1 rank"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(TrainRun, ShortRunLearnsLogsSavesAndSamples) {
  const fs::path dir = fresh_dir("short");
  std::vector<std::string> args = small_run_args();
  // A warm-up over the first tenth, so the first losses are the untrained model's.
  args.insert(args.end(), {"--lr-warmup-fraction", "0.1"});
  for (const std::string& a :
       {std::string("--save"), (dir / "save").string(), std::string("--tensorboard-dir"),
        (dir / "tb").string(), std::string("--sample-tokens"), std::string("40")})
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

  const std::string text = test::printed_text(out);
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
  const TrainRunResult reference =
      run_training(parse_train_args(whole), standard_train_hooks(), nullptr);
  run_training(parse_train_args(first), standard_train_hooks(), nullptr);
  std::vector<std::string> second = base;
  second.insert(second.end(), {"--load", (dir / "save").string(), "--lr-decay-iters", "20",
                               "--lr-warmup-iters", "2"});
  const TrainRunResult resumed =
      run_training(parse_train_args(second), standard_train_hooks(), nullptr);
  ASSERT_EQ(resumed.iterations, 10);
  for (size_t i = 0; i < 10; ++i)
    EXPECT_EQ(resumed.losses[i], reference.losses[10 + i]) << "iteration " << 11 + i;
}

// The iteration and learning rate of every line of a metrics JSONL file.
std::vector<std::pair<int64_t, double>> logged_rates(const fs::path& jsonl) {
  std::vector<std::pair<int64_t, double>> out;
  std::ifstream in(jsonl);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("learning_rate"))
      out.emplace_back(j["iteration"].get<int64_t>(), j["learning_rate"].get<double>());
  }
  return out;
}

// --train-samples, Megatron's sample-based training: 164 samples of global batches of 8 are 20
// iterations (the last 4 samples untrained), the schedule counted in samples. Every
// iteration's logged learning rate is Megatron's (its scheduler stepped by the global batch
// after each update), and a run saved after 80 samples and resumed reproduces the
// uninterrupted one's losses and rates.
TEST(TrainRun, TrainSamplesLogsMegatronsRatesAndResumes) {
  const fs::path dir = fresh_dir("samples");
  std::vector<std::string> base = small_run_args();
  const auto iters = std::find(base.begin(), base.end(), "--train-iters");
  ASSERT_NE(iters, base.end());
  base.erase(iters, iters + 2);  // one of --train-iters and --train-samples
  base.insert(base.end(),
              {"--eval-iters", "0", "--sample-tokens", "0", "--log-interval", "1",
               "--lr-warmup-samples", "20", "--lr-decay-samples", "150", "--lr-decay-style", "WSD",
               "--lr-wsd-decay-samples", "60", "--lr-wsd-decay-style", "linear"});
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return parse_train_args(a);
  };
  const TrainRunResult whole = run_training(
      with({"--train-samples", "164", "--metrics-jsonl", (dir / "whole.jsonl").string()}),
      standard_train_hooks(), nullptr);
  ASSERT_EQ(whole.iterations, 20);

  test::MegatronSchedulerArgs args;
  args.train_samples = 164;
  args.global_batch_size = 8;
  args.lr = 1e-2;
  args.min_lr = 1e-3;
  args.lr_warmup_samples = 20;
  args.lr_decay_samples = 150;
  args.lr_decay_style = "WSD";
  args.lr_wsd_decay_samples = 60;
  args.lr_wsd_decay_style = "linear";
  args.start_weight_decay = args.end_weight_decay = 0.1;
  test::MegatronScheduler megatron(args);
  EXPECT_EQ(megatron.train_iters(), 20);
  const std::vector<std::pair<int64_t, double>> rates = logged_rates(dir / "whole.jsonl");
  ASSERT_EQ(rates.size(), 20u);
  for (const auto& [iteration, rate] : rates) {
    megatron.step(8);  // Megatron logs the rate after the iteration's scheduler step
    EXPECT_DOUBLE_EQ(rate, megatron.lr()) << "iteration " << iteration;
  }
  // The schedule did decay: past 150 samples it is --min-lr.
  EXPECT_DOUBLE_EQ(rates.back().second, 1e-3);

  run_training(with({"--train-samples", "80", "--save", (dir / "save").string()}),
               standard_train_hooks(), nullptr);
  const TrainRunResult resumed =
      run_training(with({"--train-samples", "164", "--load", (dir / "save").string(),
                         "--metrics-jsonl", (dir / "resumed.jsonl").string()}),
                   standard_train_hooks(), nullptr);
  ASSERT_EQ(resumed.iterations, 10);
  for (size_t i = 0; i < 10; ++i)
    EXPECT_EQ(resumed.losses[i], whole.losses[10 + i]) << "iteration " << 11 + i;
  const std::vector<std::pair<int64_t, double>> resumed_rates = logged_rates(dir / "resumed.jsonl");
  ASSERT_EQ(resumed_rates.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(resumed_rates[i].first, rates[10 + i].first);
    EXPECT_EQ(resumed_rates[i].second, rates[10 + i].second) << "iteration " << 11 + i;
  }
  fs::remove_all(dir);
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
  const TrainRunResult reference =
      run_training(parse_train_args(whole), standard_train_hooks(), nullptr);
  run_training(parse_train_args(first), standard_train_hooks(), nullptr);
  std::FILE* out = std::tmpfile();
  const TrainRunResult resumed =
      run_training(parse_train_args(second), standard_train_hooks(), out);
  const std::string text = test::printed_text(out);
  EXPECT_EQ(text.find("draws other jitter"), std::string::npos) << text;  // no warning
  ASSERT_EQ(resumed.iterations, 6);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(resumed.losses[i], reference.losses[6 + i]) << "iteration " << 7 + i;
}

// The args of a short run saving into `save` every 2 iterations.
std::vector<std::string> saving_run_args(const fs::path& save, int iterations) {
  std::vector<std::string> args = small_run_args();
  args.insert(args.end(), {"--train-iters", std::to_string(iterations), "--eval-iters", "0",
                           "--sample-tokens", "0", "--lr-decay-iters", "20", "--lr-warmup-iters",
                           "2", "--save", save.string(), "--save-interval", "2"});
  return args;
}

// Each iteration folder's manifest and the metrics file, as bytes: what must stay untouched.
std::map<std::string, std::string> save_folder_bytes(const fs::path& save) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(save)) {
    const fs::path manifest = e.path() / "manifest.json";
    if (fs::exists(manifest)) out[e.path().filename().string()] = read_text(manifest);
  }
  out["metrics.jsonl"] = read_text(save / "metrics.jsonl");
  return out;
}

// A save folder whose tracker is gone: `--load` it is an error listing the iteration folders
// (never "no checkpoint there yet", which trained from scratch and wrote over iter_0000002),
// and nothing is written, the metrics file included.
TEST(TrainRun, LoadOfIterationFoldersWithoutTheTrackerIsRefused) {
  const fs::path dir = fresh_dir("no_tracker");
  const fs::path save = dir / "save";
  run_training(parse_train_args(saving_run_args(save, 4)), standard_train_hooks(), nullptr);
  fs::remove(save / kTrackerFileName);
  const auto before = save_folder_bytes(save);
  std::vector<std::string> again = saving_run_args(save, 4);
  again.insert(again.end(), {"--load", save.string()});
  const std::string error = error_of(parse_train_args(again), standard_train_hooks());
  EXPECT_NE(error.find("holds iteration folders (iter_0000002, iter_0000004)"), std::string::npos)
      << error;
  EXPECT_NE(error.find("--load " + (save / "iter_0000004").string()), std::string::npos);
  EXPECT_EQ(save_folder_bytes(save), before);
  EXPECT_FALSE(fs::exists(save / kTrackerFileName));
}

// --save into a folder that holds a newer iteration than the run starts from is refused
// before anything trains or is written (a fresh run, a --finetune); resuming it is fine, and
// a save of the very iteration loaded, with nothing trained since, is skipped. The default
// run's option replaces its own earlier save.
TEST(TrainRun, SaveNeverWritesOverAnotherRunsIterations) {
  const fs::path dir = fresh_dir("newer");
  const fs::path save = dir / "save";
  run_training(parse_train_args(saving_run_args(save, 4)), standard_train_hooks(), nullptr);
  const auto before = save_folder_bytes(save);

  std::string error = error_of(parse_train_args(saving_run_args(save, 4)), standard_train_hooks());
  EXPECT_NE(error.find("--save " + save.string() + " already holds iteration 4"), std::string::npos)
      << error;
  EXPECT_NE(error.find("where this run starts (from scratch)"), std::string::npos) << error;
  std::vector<std::string> finetune = saving_run_args(save, 4);
  finetune.insert(finetune.end(), {"--load", save.string(), "--finetune"});
  error = error_of(parse_train_args(finetune), standard_train_hooks());
  EXPECT_NE(error.find("already holds iteration 4"), std::string::npos) << error;
  EXPECT_EQ(save_folder_bytes(save), before);

  // Resumed at its last iteration with nothing to train: loaded, not saved again.
  std::vector<std::string> resume = saving_run_args(save, 4);
  resume.insert(resume.end(), {"--load", save.string()});
  std::FILE* out = std::tmpfile();
  EXPECT_EQ(run_training(parse_train_args(resume), standard_train_hooks(), out).iterations, 0);
  EXPECT_NE(test::printed_text(out).find("is the checkpoint this run loaded"), std::string::npos);
  auto after = save_folder_bytes(save);
  after["metrics.jsonl"] = before.at("metrics.jsonl");  // the resumed run appended its notes
  EXPECT_EQ(after, before);

  // The default run replaces its own earlier checkpoint, and says so.
  StandardHookOptions replace;
  replace.replace_earlier_saves = true;
  out = std::tmpfile();
  run_training(parse_train_args(saving_run_args(save, 4)), standard_train_hooks(replace), out);
  const std::string text = test::printed_text(out);
  EXPECT_NE(text.find("replacing " + (save / "iter_0000002").string()), std::string::npos) << text;
  EXPECT_EQ(latest_checkpoint_iteration(save.string()), 4);
}

// --load of a model folder (`moe convert` output, or a Hugging Face folder), with --finetune
// or without: its weights are the run's starting point (it used to be "no checkpoint there
// yet; training from scratch"). --finetune with nothing to load is an error.
TEST(TrainRun, AModelFolderInLoadGivesTheRunItsWeights) {
  const fs::path dir = fresh_dir("model_folder");
  fs::create_directories(dir);
  std::vector<std::string> args = small_run_args();
  args.insert(args.end(), {"--train-iters", "1", "--eval-iters", "0", "--sample-tokens", "0"});
  const TrainRunConfig plain = parse_train_args(args);
  const uint64_t seed = 977;
  nn::GPTModel source(plain.model, DType::f32, Device::cpu(), seed);
  checkpoint::save_model((dir / "conv").string(), source);
  const auto hf_tensors = checkpoint::testing::random_hf_tensors(plain.model, DType::f32, seed);
  checkpoint::testing::write_hf_folder(dir / "hf", plain.model, hf_tensors, DType::f32);

  for (const bool finetune : {true, false}) {
    for (const std::string folder : {"conv", "hf"}) {
      SCOPED_TRACE(folder + (finetune ? " --finetune" : ""));
      std::vector<std::string> with_load = args;
      with_load.insert(with_load.end(), {"--load", (dir / folder).string()});
      if (finetune) with_load.push_back("--finetune");
      TrainHooks hooks = standard_train_hooks();
      const auto load = hooks.load;
      bool checked = false;
      hooks.load = [&](TrainSession& s) {
        load(s);
        EXPECT_EQ(s.trainer.iteration(), 0);
        const Tensor& embedding = s.model.embed_tokens.value;
        const Tensor expected = folder == "conv" ? source.embed_tokens.value
                                                 : hf_tensors.at("model.embed_tokens.weight");
        EXPECT_TRUE(io::testing::same_bytes(embedding, expected));
        checked = true;
      };
      std::FILE* out = std::tmpfile();
      EXPECT_EQ(run_training(parse_train_args(with_load), hooks, out).iterations, 1);
      EXPECT_TRUE(checked);
      const std::string text = test::printed_text(out);
      EXPECT_NE(text.find("loaded the weights of the model folder"), std::string::npos) << text;
      EXPECT_EQ(text.find("from scratch"), std::string::npos) << text;
    }
  }

  // Another shape: refused, naming the field.
  std::vector<std::string> wider = args;
  wider.insert(wider.end(),
               {"--load", (dir / "conv").string(), "--finetune", "--moe-ffn-hidden-size", "64"});
  const std::string error = error_of(parse_train_args(wider), standard_train_hooks());
  EXPECT_NE(error.find("other tensor shapes"), std::string::npos) << error;
  // Nothing to fine-tune from.
  fs::create_directories(dir / "empty");
  std::vector<std::string> empty = args;
  empty.insert(empty.end(), {"--load", (dir / "empty").string(), "--finetune"});
  EXPECT_NE(error_of(parse_train_args(empty), standard_train_hooks())
                .find("--finetune: --load " + (dir / "empty").string() + " holds no"),
            std::string::npos);
}

// --lr 1e30 in NaN-skip mode: every update after the first broken one is skipped; the run
// stops at the limit of skips in a row, naming the iteration, and saves nothing more.
TEST(TrainRun, ARunThatOnlySkipsStopsWithoutSaving) {
  const fs::path dir = fresh_dir("lr_huge");
  std::vector<std::string> args = small_run_args();
  args.insert(args.end(), {"--train-iters", "30", "--eval-iters", "0", "--sample-tokens", "0",
                           "--lr", "1e30", "--save", (dir / "save").string()});
  const std::string error = error_of(parse_train_args(args), standard_train_hooks());
  EXPECT_NE(error.find("updates in a row were skipped"), std::string::npos) << error;
  EXPECT_EQ(error.rfind("iteration ", 0), 0u) << error;
  EXPECT_FALSE(latest_checkpoint_iteration((dir / "save").string()).has_value());
}

// What SIGINT / SIGTERM would print follows the run: the last save, the run's end.
TEST(TrainRun, TheInterruptReportFollowsTheRun) {
  const fs::path dir = fresh_dir("interrupt_text");
  interrupt_report_reset();
  EXPECT_EQ(interrupt_report_text(SIGINT),
            "moe train: interrupted by SIGINT setting up; this run saved no checkpoint\n");
  interrupt_report_iteration(3, 4);
  EXPECT_NE(interrupt_report_text(SIGTERM).find("SIGTERM during iteration 3 of 4;"),
            std::string::npos);
  run_training(parse_train_args(saving_run_args(dir / "save", 4)), standard_train_hooks(), nullptr);
  const std::string text = interrupt_report_text(SIGTERM);
  EXPECT_NE(text.find("after training (4 iterations done)"), std::string::npos) << text;
  EXPECT_NE(text.find("last checkpoint saved: " + (dir / "save" / "iter_0000004").string() +
                      " (resume with --load " + (dir / "save").string() + ")"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace moe::train
