// moe train --profile: which iterations are profiled and with what, as Megatron-LM's flags say.
// - --profile: iterations (--profile-step-start, --profile-step-end] are profiled (Megatron's
//   window: with the defaults 10 and 12, iterations 11 and 12) on the ranks of --profile-ranks
//   (all when empty). The host's ranges are recorded (core/trace_recorder.h) and a summary per
//   stage is printed (step_profile.h).
// - Without a trace destination the window is also Nsight Systems' capture range (cudaProfilerStart
//   / cudaProfilerStop, as Megatron's --profile: run under `nsys profile
//   --capture-range=cudaProfilerApi --capture-range-end=stop`), and the device is left to nsys.
// - --use-pytorch-profiler (Megatron's name for its built-in profiler) or --profile-dir DIR
//   (moecore): moecore records the device's activity too (CUPTI, core/device_activity.h), the
//   summary gains the device's busy and idle time, and each profiled rank writes a Chrome trace,
//   rank-R.json, to DIR or where Megatron writes its traces, <--tensorboard-dir>/../torch_profile.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "moe/train/step_profile.h"

namespace moe::train {

struct ProfileConfig {
  bool enabled = false;        // --profile
  int64_t step_start = 10;     // --profile-step-start
  int64_t step_end = 12;       // --profile-step-end
  std::vector<int64_t> ranks;  // --profile-ranks (empty: every rank)
  bool use_builtin = false;    // --use-pytorch-profiler
  std::string dir;             // --profile-dir (moecore)

  // Where rank `rank`'s trace goes ("" : no trace file, the window drives nsys instead).
  std::string trace_path(int rank, const std::string& tensorboard_dir) const;
  bool profiles_rank(int rank) const;
};

class StepProfiler {
 public:
  // `out`: where the summary is printed (null: not printed; the trace folder, when there is one,
  // gets it as rank-R.txt either way).
  StepProfiler(ProfileConfig config, int rank, std::string tensorboard_dir, bool on_gpu,
               std::FILE* out);
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  // Several ranks: every rank's figures to every rank (a collective: each rank of the run calls
  // it once, at the window's end, whether it recorded or not); rank 0 prints them as a table.
  using GatherRanks = std::function<std::vector<RankProfile>(const RankProfile& mine)>;
  void set_gather(GatherRanks gather) { gather_ = std::move(gather); }

  // Around each training step: `completed` is the iterations done before / after it. A window
  // that a resumed run starts inside is profiled from the run's first step. Every rank of a run
  // calls these at the same iterations, so the window opens and closes on all of them together.
  void before_step(int64_t completed);
  void after_step(int64_t completed);
  // At the end of training: a window still open (training ended inside it) is closed there.
  void finish(int64_t completed);

  bool recording() const { return recording_; }

 private:
  void start_recording();
  RankProfile stop_recording(int64_t last_iteration);  // prints / writes this rank's summary
  void close(int64_t last_iteration);

  ProfileConfig config_;
  int rank_;
  std::string trace_path_;
  bool on_gpu_;
  std::FILE* out_;
  GatherRanks gather_;
  bool active_ = false;     // this rank profiles
  bool open_ = false;       // the window is open (on every rank)
  bool recording_ = false;  // this rank records: host ranges (and the device's, or nsys's range)
  bool device_recording_ = false;
  bool nsys_range_ = false;
  bool done_ = false;
  std::string device_note_;
  int64_t first_iteration_ = 0;
};

}  // namespace moe::train
