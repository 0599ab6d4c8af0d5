// `moe train`'s run on several ranks (run_training_on), ranks as threads of the Local backend:
// expert parallelism and data parallelism with the distributed optimizer train the model one rank
// trains (the same losses within 1e-5 relative: the ranks add the same gradients in another
// order); rank 0 alone prints; checkpoints saved by several ranks resume under another mapping;
// the refusals that need the world size; --exit-signal-handler's stop after an iteration. (The same
// under mpirun, as processes: mpi_train_parity_test.sh.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/printed_text.h"
#include "moe/core/error.h"
#include "moe/data/preprocess.h"
#include "moe/data/tokenizer.h"
#include "moe/dist/local_backend.h"
#include "moe/train/exit_signal.h"
#include "moe/train/pipeline_timeline_report.h"
#include "moe/train/train_args.h"
#include "moe/train/train_checkpoint.h"
#include "moe/train/train_run.h"

namespace moe::train {
namespace {

// A small and quick run: 1 layer of width 32, 4 experts, a sample and two evaluations.
std::vector<std::string> small_run(const std::vector<std::string>& more) {
  std::vector<std::string> args = {"--cpu", "--num-layers",          "1",  "--hidden-size",
                                   "32",    "--num-attention-heads", "2",  "--num-query-groups",
                                   "1",     "--num-experts",         "4",  "--moe-ffn-hidden-size",
                                   "32",    "--seq-length",          "16", "--micro-batch-size",
                                   "2",     "--train-iters",         "6",  "--lr",
                                   "1e-2",  "--log-interval",        "1",  "--eval-interval",
                                   "3",     "--eval-iters",          "1",  "--sample-tokens",
                                   "12"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

struct RanksRun {
  std::vector<TrainRunResult> results;  // per rank
  std::string output;                   // everything the ranks wrote to the shared output
};

// The run on `ranks` threads; rank 0 keeps the process's interrupt report.
RanksRun run_on_ranks(const TrainRunConfig& config, int ranks) {
  RanksRun run;
  run.results.resize(static_cast<size_t>(ranks));
  std::FILE* out = std::tmpfile();
  std::mutex mutex;
  dist::run_local(ranks, [&](std::shared_ptr<dist::ProcessGroup> world) {
    const int r = world->rank();
    const TrainWorld place{world, Device::cpu(), r == 0};
    TrainRunResult result = run_training_on(config, place, standard_train_hooks(), out);
    std::lock_guard lock(mutex);
    run.results[static_cast<size_t>(r)] = std::move(result);
  });
  run.output = test::printed_text(out);
  return run;
}

void expect_same_losses(const TrainRunResult& one, const TrainRunResult& many) {
  ASSERT_EQ(one.losses.size(), many.losses.size());
  for (size_t i = 0; i < one.losses.size(); ++i)
    EXPECT_NEAR(many.losses[i], one.losses[i], 1e-5 * std::abs(one.losses[i]))
        << "iteration " << i + 1;
  ASSERT_EQ(one.valid_losses.size(), many.valid_losses.size());
  for (size_t i = 0; i < one.valid_losses.size(); ++i) {
    EXPECT_EQ(many.valid_losses[i].first, one.valid_losses[i].first);
    EXPECT_NEAR(many.valid_losses[i].second, one.valid_losses[i].second,
                1e-5 * std::abs(one.valid_losses[i].second));
  }
}

size_t occurrences(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

TEST(TrainRunParallel, ExpertParallelRanksTrainTheOneRankModel) {
  const TrainRunConfig one_config = parse_train_args(small_run({"--global-batch-size", "4"}));
  std::FILE* one_out = std::tmpfile();
  const TrainRunResult one = run_training_on(one_config, TrainWorld{nullptr, Device::cpu(), true},
                                             standard_train_hooks(), one_out);
  const std::string one_text = test::printed_text(one_out);
  ASSERT_EQ(one.losses.size(), 6u);

  const RanksRun many = run_on_ranks(
      parse_train_args(
          small_run({"--global-batch-size", "4", "--expert-model-parallel-size", "2"})),
      2);
  for (const TrainRunResult& r : many.results) expect_same_losses(one, r);
  // Rank 0 alone prints: one setup, one log line per iteration, one memory report, one sample.
  const std::string& text = many.output;
  EXPECT_EQ(occurrences(text, "iteration        6/       6 |"), 1u) << text;
  EXPECT_EQ(occurrences(text, "memory per rank (MiB)"), 1u) << text;
  EXPECT_EQ(occurrences(text, "  rank 1: "), 1u) << text;
  EXPECT_EQ(occurrences(text, "peak memory after iteration 1"), 1u) << text;
  EXPECT_EQ(occurrences(text, "(1 micro-batches of 2 on each of 2 data-parallel ranks)"), 1u)
      << text;
  // Every rank ran the sample's forwards (EP makes them collective); with the same weights the
  // sample is the one-rank run's.
  const size_t sample = text.find("sample (12 tokens at most");
  ASSERT_NE(sample, std::string::npos) << text;
  EXPECT_NE(one_text.find(text.substr(sample)), std::string::npos) << "one rank:\n"
                                                                   << one_text << "\n2 ranks:\n"
                                                                   << text;
  EXPECT_EQ(one_text.find("memory per rank"), std::string::npos);  // one rank: as before
}

// --train-samples without --global-batch-size on 2 data-parallel ranks: the global batch is
// micro-batch x 2 = 4, known once the ranks meet, and the run is 22 // 4 = 5 iterations (the
// parse's one-rank estimate was 22 // 2), its linear decay over the 22 samples.
TEST(TrainRunParallel, TrainSamplesCountTheDataParallelGlobalBatch) {
  std::vector<std::string> args = small_run({"--train-samples", "22", "--sample-tokens", "0",
                                             "--eval-iters", "0", "--lr-decay-style", "linear"});
  const auto iters = std::find(args.begin(), args.end(), "--train-iters");
  ASSERT_NE(iters, args.end());
  args.erase(iters, iters + 2);
  const TrainRunConfig config = parse_train_args(args);
  EXPECT_EQ(config.train.train_iters, 11);  // one rank's global batch of 2
  const RanksRun many = run_on_ranks(config, 2);
  for (const TrainRunResult& r : many.results) EXPECT_EQ(r.iterations, 5);
  const std::string& text = many.output;
  EXPECT_NE(text.find("5 iterations of 4 samples"), std::string::npos) << text;
  EXPECT_NE(text.find("the last 2 samples are not trained"), std::string::npos) << text;
  // After iteration 5 the scheduler stands at 20 of the 22 samples: 1e-2 x 2 / 22.
  EXPECT_NE(text.find("iteration        5/       5 |"), std::string::npos) << text;
  EXPECT_NE(text.find("learning rate: 9.090909E-04"), std::string::npos) << text;
}

// --moe-per-layer-logging on several ranks logs the global batch: the experts' token counts of
// every rank's micro-batches (summed), the losses averaged, as one rank logs them.
TEST(TrainRunParallel, PerLayerLoggingCountsEveryRanksTokens) {
  const std::string one_path = ::testing::TempDir() + "moe_layers_one.jsonl";
  const std::string many_path = ::testing::TempDir() + "moe_layers_many.jsonl";
  const std::vector<std::string> logging = {
      "--global-batch-size", "4", "--sample-tokens", "0", "--moe-per-layer-logging",
      "--log-interval",      "2"};
  std::vector<std::string> args = logging;
  args.insert(args.end(), {"--metrics-jsonl", one_path});
  run_training_on(parse_train_args(small_run(args)), TrainWorld{nullptr, Device::cpu(), true},
                  standard_train_hooks(), nullptr);
  args = logging;
  args.insert(args.end(), {"--metrics-jsonl", many_path, "--expert-model-parallel-size", "2"});
  run_on_ranks(parse_train_args(small_run(args)), 2);
  const auto layers_of = [](const std::string& path) {
    std::vector<nlohmann::json> out;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.contains("moe_layers")) out.push_back(j["moe_layers"][0]);
    }
    return out;
  };
  const std::vector<nlohmann::json> one = layers_of(one_path), many = layers_of(many_path);
  ASSERT_EQ(one.size(), 3u);  // iterations 2, 4, 6
  ASSERT_EQ(many.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(many[i]["expert_tokens"], one[i]["expert_tokens"]) << "log point " << i;
    EXPECT_EQ(many[i]["tokens"], one[i]["tokens"]);
    EXPECT_EQ(one[i]["tokens"].get<int64_t>(), 2 * 4 * 16 * 2);  // 2 steps x 4 x 16 x top-2
    const double aux = one[i]["aux_loss"].get<double>();
    EXPECT_NEAR(many[i]["aux_loss"].get<double>(), aux, 1e-5 * aux);
  }
}

// --data-path on several ranks: rank 0 builds and caches the indices, then the others read them
// (no two ranks write the cache at once); the ranks train what one rank trains.
TEST(TrainRunParallel, DataPathIsIndexedOnceAndTrainedAlike) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("moe_parallel_data_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream out(dir / "corpus.jsonl");
    for (int d = 0; d < 200; ++d)
      out << "{\"text\": \"the cat number " << d % 17 << " sits on the mat.\"}\n";
  }
  data::PreprocessOptions options;
  options.inputs = {(dir / "corpus.jsonl").string()};
  options.output_prefix = (dir / "corpus").string();
  options.append_eod = true;
  const std::string prefix =
      data::preprocess(options, data::ByteLevelTokenizer(), nullptr).output_prefixes.at(0);
  const std::vector<std::string> data_args = {
      "--data-path", prefix,   "--global-batch-size", "4", "--sample-tokens", "0",
      "--split",     "90,10,0"};
  std::vector<std::string> args = data_args;
  args.insert(args.end(), {"--data-cache-path", (dir / "one_cache").string()});
  const TrainRunResult one =
      run_training_on(parse_train_args(small_run(args)), TrainWorld{nullptr, Device::cpu(), true},
                      standard_train_hooks(), nullptr);
  args = data_args;  // a cache of their own, which the ranks build
  args.insert(args.end(), {"--data-cache-path", (dir / "ranks_cache").string(),
                           "--expert-model-parallel-size", "2"});
  const RanksRun many = run_on_ranks(parse_train_args(small_run(args)), 2);
  for (const TrainRunResult& r : many.results) expect_same_losses(one, r);
  EXPECT_FALSE(fs::is_empty(dir / "ranks_cache"));
  fs::remove_all(dir);
}

// --use-distributed-optimizer over DP 2, and Megatron's global batch default: given only
// --micro-batch-size, it is micro x DP.
TEST(TrainRunParallel, DistributedOptimizerRanksTrainTheOneRankModel) {
  const TrainRunResult one = run_training_on(
      parse_train_args(small_run({"--global-batch-size", "4", "--sample-tokens", "0"})),
      TrainWorld{nullptr, Device::cpu(), true}, standard_train_hooks(), nullptr);
  const RanksRun many = run_on_ranks(
      parse_train_args(small_run({"--use-distributed-optimizer", "--overlap-grad-reduce",
                                  "--overlap-param-gather", "--sample-tokens", "0"})),
      2);
  for (const TrainRunResult& r : many.results) expect_same_losses(one, r);
  EXPECT_NE(many.output.find("training: 6 iterations of 4 samples"), std::string::npos)
      << many.output;
}

std::string error_on_ranks(const TrainRunConfig& config, int ranks) {
  try {
    run_on_ranks(config, ranks);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TrainRunParallel, RefusesWhatNeedsTheWorldSize) {
  // ETP x EP must divide the world.
  const TrainRunConfig ep2 = parse_train_args(small_run({"--expert-model-parallel-size", "2"}));
  std::string e = error_on_ranks(ep2, 3);
  EXPECT_NE(e.find("--expert-tensor-parallel-size 1 x --expert-model-parallel-size 2 = 2 ranks "
                   "per expert group does not divide the world size 3"),
            std::string::npos)
      << e;
  try {
    run_training_on(ep2, TrainWorld{nullptr, Device::cpu(), true}, {}, nullptr);
    ADD_FAILURE() << "EP 2 on one rank ran";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("does not divide the world size 1 (one process"),
              std::string::npos)
        << error.what();
  }
  // Not on several ranks yet: upcycling (whole dense tensors into one rank's model).
  e = error_on_ranks(parse_train_args(small_run({"--moe-use-upcycling", "--load", "/nonexistent",
                                                 "--save", "/nonexistent"})),
                     2);
  EXPECT_NE(e.find("world size 2: --moe-use-upcycling is not supported by a run of several ranks"),
            std::string::npos)
      << e;
  // A global batch the ranks cannot split.
  e = error_on_ranks(parse_train_args(small_run({"--global-batch-size", "2"})), 2);
  EXPECT_NE(e.find("--global-batch-size 2"), std::string::npos) << e;
  EXPECT_NE(e.find("data-parallel size 2"), std::string::npos) << e;
}

// Pipeline parallelism: 2 stages with 2 virtual stages each (4 layers, one per chunk) train
// the one-rank model; --pipeline-timeline prints the schedule the ranks recorded as they ran
// it, which is Megatron's interleaved 1F1B for 2 ranks, 2 chunks and 4 micro-batches; no rank
// prints a text sample.
TEST(TrainRunParallel, PipelineStagesTrainTheOneRankModelAndDrawTheirSchedule) {
  const std::vector<std::string> model = {"--num-layers", "4", "--global-batch-size", "8"};
  const TrainRunResult one =
      run_training_on(parse_train_args(small_run(model)), TrainWorld{nullptr, Device::cpu(), true},
                      standard_train_hooks(), nullptr);
  std::vector<std::string> args = model;
  args.insert(args.end(), {"--pipeline-model-parallel-size", "2",
                           "--num-virtual-stages-per-pipeline-rank", "2", "--pipeline-timeline"});
  const RanksRun many = run_on_ranks(parse_train_args(small_run(args)), 2);
  for (const TrainRunResult& r : many.results) expect_same_losses(one, r);
  const std::string expected =
      format_pipeline_timeline(pipeline_schedules(2, /*num_microbatches=*/4, /*vpp_size=*/2), 1);
  EXPECT_EQ(occurrences(many.output, expected), 1u) << many.output << "\nexpected:\n" << expected;
  EXPECT_NE(expected.find("idle / busy = 12.5%"), std::string::npos) << expected;  // 1 / (2 x 4)
  EXPECT_EQ(occurrences(many.output, "no text sample: generation runs on a rank that holds"), 1u)
      << many.output;
  // Refusals: a malformed layout names its position; standalone MTP; the timeline without PP.
  std::string e = error_on_ranks(
      parse_train_args(small_run({"--num-layers", "4", "--pipeline-model-parallel-size", "2",
                                  "--pipeline-model-parallel-layout", "Et|t*3)L"})),
      2);
  EXPECT_NE(e.find("--pipeline-model-parallel-layout"), std::string::npos) << e;
  // Interleaving needs as many micro-batches as stages: refused before training.
  e = error_on_ranks(parse_train_args(small_run({"--num-layers", "4", "--global-batch-size", "2",
                                                 "--pipeline-model-parallel-size", "2",
                                                 "--num-virtual-stages-per-pipeline-rank", "2"})),
                     2);
  EXPECT_NE(e.find("--microbatch-group-size-per-virtual-pipeline-stage"), std::string::npos) << e;
  e = error_on_ranks(parse_train_args(small_run({"--pipeline-timeline"})), 2);
  EXPECT_NE(e.find("--pipeline-timeline"), std::string::npos) << e;
}

// DeepSeek-V3's layout shape: the MTP layer in a stage of its own before the loss's (standalone
// MTP, "...|m|L"), on 2 ranks of 2 virtual stages each, trains the one-rank model.
TEST(TrainRunParallel, StandaloneMtpStageTrainsTheOneRankModel) {
  const std::vector<std::string> model = {"--num-layers",        "4", "--mtp-num-layers", "1",
                                          "--global-batch-size", "8"};
  const TrainRunResult one =
      run_training_on(parse_train_args(small_run(model)), TrainWorld{nullptr, Device::cpu(), true},
                      standard_train_hooks(), nullptr);
  std::vector<std::string> args = model;
  args.insert(args.end(), {"--pipeline-model-parallel-size", "2",
                           "--pipeline-model-parallel-layout", "Et*2|t*2|m|L"});
  const RanksRun many = run_on_ranks(parse_train_args(small_run(args)), 2);
  for (const TrainRunResult& r : many.results) expect_same_losses(one, r);
  EXPECT_NE(many.output.find("PP 2 (layout Et*2|t*2|m|L)"), std::string::npos) << many.output;
}

// Checkpoints of several ranks: 2 ranks (EP 2) save at iteration 3 and at the end; resumed
// from iteration 3 on 2 ranks, and on one rank, the run continues as it went on (train_checkpoint.h
// reads each rank's slices under any mapping).
TEST(TrainRunParallel, SavesAndResumesUnderAnotherMapping) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("moe_parallel_save_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::vector<std::string> run = {"--global-batch-size", "4", "--sample-tokens", "0",
                                        "--eval-iters",        "0"};
  std::vector<std::string> args = run;
  args.insert(args.end(), {"--expert-model-parallel-size", "2", "--save", dir.string(),
                           "--save-interval", "3"});
  const RanksRun full = run_on_ranks(parse_train_args(small_run(args)), 2);
  ASSERT_EQ(full.results[0].losses.size(), 6u);
  EXPECT_EQ(latest_checkpoint_iteration(dir.string()), 6);
  EXPECT_NO_THROW(verify_training_checkpoint((dir / "iter_0000003").string()));
  EXPECT_EQ(occurrences(full.output, "saved checkpoint "), 2u) << full.output;

  const std::string iteration3 = (dir / "iter_0000003").string();
  const auto expect_continues = [&](const TrainRunResult& resumed, const std::string& how) {
    ASSERT_EQ(resumed.losses.size(), 3u) << how;
    for (size_t i = 0; i < 3; ++i)
      EXPECT_NEAR(resumed.losses[i], full.results[0].losses[i + 3],
                  1e-5 * full.results[0].losses[i + 3])
          << how << ", iteration " << i + 4;
  };
  args = run;
  args.insert(args.end(), {"--expert-model-parallel-size", "2", "--load", iteration3});
  const RanksRun again = run_on_ranks(parse_train_args(small_run(args)), 2);
  EXPECT_NE(again.output.find("loaded checkpoint " + iteration3 + " (iteration 3)"),
            std::string::npos)
      << again.output;
  for (const TrainRunResult& r : again.results) expect_continues(r, "2 ranks, EP 2");
  args = run;
  args.insert(args.end(), {"--load", iteration3});
  expect_continues(
      run_training_on(parse_train_args(small_run(args)), TrainWorld{nullptr, Device::cpu(), true},
                      standard_train_hooks(), nullptr),
      "one rank");
  fs::remove_all(dir);
}

// --load of a model folder (`moe convert` output) on several ranks: each rank reads its slices
// (EP 2: its experts only), and the ranks fine-tune the model one rank fine-tunes.
TEST(TrainRunParallel, ModelFolderLoadsIntoAnExpertParallelRun) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("moe_parallel_model_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::vector<std::string> run = {"--global-batch-size", "4", "--sample-tokens", "0",
                                        "--eval-iters",        "0"};
  std::vector<std::string> args = run;
  args.insert(args.end(), {"--train-iters", "3", "--save", (dir / "ckpt").string()});
  run_training_on(parse_train_args(small_run(args)), TrainWorld{nullptr, Device::cpu(), true},
                  standard_train_hooks(), nullptr);
  // The model part of the one-rank checkpoint: a model folder.
  const fs::path model = dir / "model";
  fs::create_directories(model);
  for (const fs::directory_entry& e : fs::directory_iterator(dir / "ckpt" / "iter_0000003")) {
    const std::string name = e.path().filename().string();
    if (name == "model_config.json" || name.rfind("model", 0) == 0)
      fs::copy_file(e.path(), model / name);
  }
  args = run;
  args.insert(args.end(), {"--load", model.string(), "--finetune"});
  const TrainRunResult one =
      run_training_on(parse_train_args(small_run(args)), TrainWorld{nullptr, Device::cpu(), true},
                      standard_train_hooks(), nullptr);
  args.insert(args.end(), {"--expert-model-parallel-size", "2"});
  const RanksRun many = run_on_ranks(parse_train_args(small_run(args)), 2);
  EXPECT_NE(many.output.find("loaded the weights of the model folder " + model.string()),
            std::string::npos)
      << many.output;
  for (const TrainRunResult& r : many.results) expect_same_losses(one, r);
  fs::remove_all(dir);
}

// --exit-signal-handler: a signal during iteration 3 ends the run after it, with a save (here
// the hook's, at iteration 3 already: not repeated), without the final evaluation and sample.
TEST(TrainRunParallel, ExitSignalEndsTheRunAfterTheIteration) {
  TrainRunConfig config = parse_train_args(small_run({"--exit-signal-handler"}));
  config.save = "unused";  // the hooks below stand in for checkpoints
  config.metrics_jsonl = ::testing::TempDir() + "moe_exit_signal_metrics.jsonl";
  config.save_interval = 3;
  int saves = 0, samples = 0;
  TrainHooks hooks;
  hooks.save = [&](TrainSession& s) {
    ++saves;
    if (s.trainer.iteration() == 3) raise(SIGTERM);  // noted; the run goes on to the check
  };
  hooks.after_training = [&](TrainSession&) { ++samples; };
  struct sigaction old_term {
  }, old_int{};
  sigaction(SIGTERM, nullptr, &old_term);
  sigaction(SIGINT, nullptr, &old_int);
  install_exit_signal_handler();
  std::FILE* out = std::tmpfile();
  const TrainRunResult r =
      run_training_on(config, TrainWorld{nullptr, Device::cpu(), true}, hooks, out);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGINT, &old_int, nullptr);
  reset_exit_signal();
  const std::string text = test::printed_text(out);
  EXPECT_EQ(r.iterations, 3);
  EXPECT_EQ(r.exit_signal, SIGTERM);
  EXPECT_EQ(saves, 1);
  EXPECT_EQ(samples, 0);
  ASSERT_EQ(r.valid_losses.size(), 1u);  // iteration 3's; none at the end
  EXPECT_NE(text.find("exiting after iteration 3 of 6: received SIGTERM (--exit-signal-handler)"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace moe::train
