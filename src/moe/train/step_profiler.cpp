#include "moe/train/step_profiler.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "moe/core/device_activity.h"
#include "moe/core/error.h"
#include "moe/core/trace_recorder.h"
#include "moe/train/step_profile.h"

namespace moe::train {

namespace fs = std::filesystem;

std::string ProfileConfig::trace_path(int rank, const std::string& tensorboard_dir) const {
  fs::path folder;
  if (!dir.empty())
    folder = dir;
  else if (use_builtin && !tensorboard_dir.empty())
    folder = (fs::path(tensorboard_dir) / ".." / "torch_profile").lexically_normal();
  else
    return "";
  return (folder / ("rank-" + std::to_string(rank) + ".json")).string();
}

bool ProfileConfig::profiles_rank(int rank) const {
  return ranks.empty() || std::find(ranks.begin(), ranks.end(), rank) != ranks.end();
}

StepProfiler::StepProfiler(ProfileConfig config, int rank, std::string tensorboard_dir, bool on_gpu,
                           std::FILE* out)
    : config_(std::move(config)),
      rank_(rank),
      trace_path_(config_.trace_path(rank, tensorboard_dir)),
      on_gpu_(on_gpu),
      out_(out),
      active_(config_.enabled && config_.profiles_rank(rank)) {}

StepProfiler::~StepProfiler() {
  if (!recording_) return;  // a run that threw inside the window: end the recordings quietly
  try {
    if (device_recording_) DeviceActivityRecorder::stop();
    if (nsys_range_) stop_profiler_capture();
  } catch (...) {
  }
  TraceRecorder::stop();
}

void StepProfiler::before_step(int64_t completed) {
  if (!config_.enabled || open_ || done_) return;
  if (completed < config_.step_start || completed >= config_.step_end) return;
  open_ = true;
  first_iteration_ = completed + 1;
  if (active_) start_recording();
}

void StepProfiler::after_step(int64_t completed) {
  if (open_ && completed >= config_.step_end) close(completed);
}

void StepProfiler::finish(int64_t completed) {
  if (open_) {
    close(completed);
    return;
  }
  if (active_ && !done_ && out_)
    std::fprintf(out_,
                 "profile: nothing profiled on rank %d: iterations %lld-%lld (--profile-step-start "
                 "%lld, --profile-step-end %lld) are not among this run's, which ended at "
                 "iteration %lld\n",
                 rank_, static_cast<long long>(config_.step_start + 1),
                 static_cast<long long>(config_.step_end),
                 static_cast<long long>(config_.step_start),
                 static_cast<long long>(config_.step_end), static_cast<long long>(completed));
}

void StepProfiler::close(int64_t last_iteration) {
  open_ = false;
  done_ = true;
  const RankProfile mine = recording_ ? stop_recording(last_iteration) : RankProfile{};
  if (!gather_) return;
  const std::vector<RankProfile> ranks = gather_(mine);
  if (out_ && ranks.size() > 1) {
    std::fprintf(out_, "%s", format_rank_profiles(ranks, first_iteration_, last_iteration).c_str());
    std::fflush(out_);
  }
}

void StepProfiler::start_recording() {
  if (!TraceRecorder::start()) {
    if (out_)
      std::fprintf(out_,
                   "profile: rank %d not profiled: another recording of this process is in "
                   "progress\n",
                   rank_);
    return;
  }
  recording_ = true;
  if (!on_gpu_) {
    device_note_ = "a CPU run: the host's ranges are its work";
  } else if (!trace_path_.empty()) {
    device_note_ = DeviceActivityRecorder::start();
    device_recording_ = device_note_.empty();
  } else {
    start_profiler_capture();
    nsys_range_ = true;
    device_note_ =
        "left to Nsight Systems, whose --capture-range=cudaProfilerApi is this window; "
        "--profile-dir DIR or --use-pytorch-profiler records it here";
  }
}

RankProfile StepProfiler::stop_recording(int64_t last_iteration) {
  int64_t dropped = 0;
  std::vector<DeviceActivity> activities;
  if (device_recording_) activities = DeviceActivityRecorder::stop(&dropped);
  if (nsys_range_) stop_profiler_capture();
  const std::vector<TraceSpan> spans = TraceRecorder::stop();
  recording_ = device_recording_ = nsys_range_ = false;

  const StepProfileSummary summary = summarize_step_profile(spans, activities);
  std::string text =
      format_step_profile(summary, first_iteration_, last_iteration, rank_, device_note_);
  if (dropped > 0)
    text += "  CUPTI dropped " + std::to_string(dropped) +
            " records for want of buffer space: the device's figures are short of them\n";
  if (!trace_path_.empty()) {
    const fs::path path(trace_path_);
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    std::ofstream trace(path);
    MOE_CHECK(trace.good(), "--profile: cannot write the trace ", path.string());
    trace << step_profile_trace(spans, activities, rank_).dump() << "\n";
    fs::path summary_path = path;
    summary_path.replace_extension(".txt");
    std::ofstream(summary_path) << text;
    text += "  trace (chrome://tracing, ui.perfetto.dev): " + path.string() + "\n";
  }
  if (out_) {
    std::fprintf(out_, "%s", text.c_str());
    std::fflush(out_);
  }
  return rank_profile(summary);
}

}  // namespace moe::train
