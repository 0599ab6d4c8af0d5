// train/step_profiler.h: Megatron's window (iterations after --profile-step-start up to
// --profile-step-end), a resumed run starting inside it, a window the run never reaches, the
// ranks profiled, and where the trace goes (--profile-dir, or Megatron's torch_profile folder
// beside --tensorboard-dir).
#include "moe/train/step_profiler.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/printed_text.h"
#include "moe/core/trace_range.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

// Runs iterations first..last (the loop of train_run), each a "train_step" range holding a
// "layer"; returns what the profiler printed.
std::string run_steps(const ProfileConfig& config, int64_t first, int64_t last, int rank = 0,
                      const std::string& tensorboard_dir = "",
                      StepProfiler::GatherRanks gather = nullptr) {
  std::FILE* out = std::tmpfile();
  {
    StepProfiler profiler(config, rank, tensorboard_dir, /*on_gpu=*/false, out);
    if (gather) profiler.set_gather(gather);
    for (int64_t it = first; it <= last; ++it) {
      profiler.before_step(it - 1);
      {
        const TraceRange step("train_step");
        const TraceRange layer("layer");
      }
      profiler.after_step(it);
    }
    profiler.finish(last);
  }
  return test::printed_text(out);
}

ProfileConfig window(int64_t start, int64_t end) {
  ProfileConfig c;
  c.enabled = true;
  c.step_start = start;
  c.step_end = end;
  return c;
}

TEST(StepProfiler, ProfilesTheIterationsAfterTheStartUpToTheEnd) {
  const std::string text = run_steps(window(10, 12), 1, 20);
  EXPECT_NE(text.find("profile of iterations 11-12 on rank 0: 2 steps in"), std::string::npos)
      << text;
  EXPECT_NE(text.find("a CPU run"), std::string::npos) << text;
  EXPECT_NE(text.find("layer"), std::string::npos) << text;
  EXPECT_EQ(text.find("trace ("), std::string::npos) << text;  // no folder, no file
}

TEST(StepProfiler, AResumedRunInsideTheWindowProfilesTheRest) {
  const std::string text = run_steps(window(2, 6), 5, 8);
  EXPECT_NE(text.find("profile of iterations 5-6 on rank 0: 2 steps"), std::string::npos) << text;
}

TEST(StepProfiler, TrainingThatEndsInsideTheWindowClosesItThere) {
  const std::string text = run_steps(window(2, 10), 1, 4);
  EXPECT_NE(text.find("profile of iterations 3-4 on rank 0: 2 steps"), std::string::npos) << text;
}

TEST(StepProfiler, AWindowTheRunNeverReachesIsSaid) {
  const std::string late = run_steps(window(10, 12), 1, 5);
  EXPECT_NE(late.find("nothing profiled on rank 0: iterations 11-12"), std::string::npos) << late;
  EXPECT_NE(late.find("ended at iteration 5"), std::string::npos) << late;
  const std::string past = run_steps(window(2, 4), 7, 9);  // resumed after the window
  EXPECT_NE(past.find("nothing profiled"), std::string::npos) << past;
}

TEST(StepProfiler, OnlyTheListedRanksAndNothingWithoutProfile) {
  ProfileConfig c = window(0, 1);
  c.ranks = {1, 3};
  EXPECT_TRUE(c.profiles_rank(1));
  EXPECT_FALSE(c.profiles_rank(0));
  EXPECT_EQ(run_steps(c, 1, 2, /*rank=*/0), "");
  EXPECT_NE(run_steps(c, 1, 2, /*rank=*/3).find("on rank 3"), std::string::npos);
  ProfileConfig off;
  EXPECT_TRUE(off.profiles_rank(0));
  EXPECT_EQ(run_steps(off, 1, 20), "");
}

TEST(StepProfiler, WhereTheTraceGoes) {
  ProfileConfig c = window(0, 1);
  EXPECT_EQ(c.trace_path(0, "runs/tb"), "");  // --profile alone: Nsight Systems' range
  c.use_builtin = true;
  EXPECT_EQ(c.trace_path(2, "runs/tb"), "runs/torch_profile/rank-2.json");  // Megatron's place
  EXPECT_EQ(c.trace_path(0, "/x/runs/tb/"), "/x/runs/torch_profile/rank-0.json");
  c.dir = "prof";
  EXPECT_EQ(c.trace_path(1, "runs/tb"), "prof/rank-1.json");
}

TEST(StepProfiler, WritesTheTraceAndTheSummaryToTheFolder) {
  const fs::path dir =
      fs::temp_directory_path() / ("moe_step_profiler_" + std::to_string(getpid()));
  fs::remove_all(dir);
  ProfileConfig c = window(1, 3);
  c.dir = (dir / "nested").string();
  const std::string text = run_steps(c, 1, 4, /*rank=*/1);
  EXPECT_NE(text.find("trace (chrome://tracing, ui.perfetto.dev): " +
                      (dir / "nested" / "rank-1.json").string()),
            std::string::npos)
      << text;
  std::ifstream in(dir / "nested" / "rank-1.json");
  const nlohmann::json trace = nlohmann::json::parse(in);
  int steps = 0;
  for (const nlohmann::json& e : trace.at("traceEvents"))
    if (e.at("name") == "train_step") ++steps;
  EXPECT_EQ(steps, 2);
  std::ifstream summary(dir / "nested" / "rank-1.txt");
  std::string first_line;
  std::getline(summary, first_line);
  EXPECT_EQ(first_line.rfind("profile of iterations 2-3 on rank 1: 2 steps", 0), 0u) << first_line;
  fs::remove_all(dir);
}

TEST(StepProfiler, EveryRankJoinsTheGatherOnceAndRankZeroPrintsTheTable) {
  ProfileConfig c = window(1, 3);
  c.ranks = {1};  // rank 0 does not record, but takes part
  std::vector<RankProfile> sent;
  const auto gather = [&](const RankProfile& mine) {
    sent.push_back(mine);
    RankProfile other;
    other.profiled = true;
    other.steps = 2;
    other.wall_ns = 4'000'000;
    other.grad_sync_ns = 1'000'000;
    return std::vector<RankProfile>{mine, other};
  };
  const std::string text = run_steps(c, 1, 5, /*rank=*/0, "", gather);
  ASSERT_EQ(sent.size(), 1u);  // once, at the window's end
  EXPECT_FALSE(sent[0].profiled);
  EXPECT_NE(text.find("profile of iterations 2-3, every rank"), std::string::npos) << text;
  EXPECT_NE(text.find("       0   not profiled"), std::string::npos) << text;
  EXPECT_NE(text.find("       1       2.00            -              -        0.50"),
            std::string::npos)
      << text;

  sent.clear();
  (void)run_steps(c, 1, 5, /*rank=*/1, "", gather);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(sent[0].profiled);
  EXPECT_EQ(sent[0].steps, 2);
  EXPECT_FALSE(sent[0].has_device);

  sent.clear();
  (void)run_steps(c, 5, 9, /*rank=*/1, "", gather);  // the window is not in the run: no gather
  EXPECT_TRUE(sent.empty());
}

}  // namespace
}  // namespace moe::train
