// What a profile of training steps says (moe train --profile): the host's ranges
// (core/trace_recorder.h) and the device's activity (core/device_activity.h) of the profiled
// iterations, joined into
// - per stage (a TraceRange's name: train_step, layer, attention, moe.dispatch, optimizer, ...):
//   calls, host time (inclusive: the range's wall time on the host; self: outside the ranges it
//   holds, where host overhead not marked by a stage shows), and device time, self (the
//   kernels launched directly inside the range) and inclusive (inside it or a range it holds);
// - the device's idle time: the window minus the union of every activity's [begin, end); each gap
//   is explained by the work that ends it: queued after the gap began means the GPU waited on the
//   host (launch-bound: the host was slow to queue, or a host synchronisation drained the
//   queue), queued before it means it waited on something else (another stream, a transfer);
// - a Chrome trace (chrome://tracing, Perfetto's ui.perfetto.dev): the host's ranges per thread,
//   the device's work per stream, each kernel naming its stage and launch delay.
// Pure functions of the records: they are tested on synthetic timelines.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/core/device_activity.h"
#include "moe/core/trace_recorder.h"

namespace moe::train {

struct StageProfile {
  std::string name;
  int64_t calls = 0;
  int64_t host_ns = 0;              // sum of the ranges' wall times (nested same names once)
  int64_t host_self_ns = 0;         // of that, the time in no range the ranges hold
  int64_t device_self_ns = 0;       // activities queued directly inside a range of this name
  int64_t device_inclusive_ns = 0;  // queued inside one, at any depth
  int64_t activities = 0;           // kernels, copies and memsets queued inside one (any depth)
};

struct IdleGap {
  int64_t begin_ns = 0;
  int64_t end_ns = 0;
  std::string next;        // the activity that ends the gap ("" : the window's end)
  std::string next_stage;  // its stage path, "train_step > layer > moe.dispatch" ("" : none)
  int64_t queued_into_gap_ns = -1;  // how long after the gap began it was queued (-1: before /
                                    // not recorded)
  std::string host_stage;           // the stage path the launching host thread was in mid-gap
};

struct StepProfileSummary {
  int64_t begin_ns = 0, end_ns = 0;  // the window: first record to last
  int64_t steps = 0;                 // train_step ranges in it
  bool has_device = false;           // device activity was recorded
  int64_t activities = 0;
  int64_t busy_ns = 0;                 // union of the activities' intervals
  int64_t idle_ns = 0;                 // the window minus busy
  int64_t gaps = 0;                    // idle gaps of at least min_gap_ns
  int64_t gaps_idle_ns = 0;            // their total
  int64_t host_bound_idle_ns = 0;      // of those, the gaps whose next work was queued mid-gap
  std::vector<StageProfile> stages;    // by inclusive device time, then host time, descending
  std::vector<IdleGap> largest_gaps;   // the longest, longest first
  int64_t unattributed_device_ns = 0;  // activities queued outside every recorded range
};

struct StepProfileOptions {
  int64_t min_gap_ns = 10'000;  // gaps shorter than this are counted in idle_ns only
  size_t largest_gaps = 8;
};

StepProfileSummary summarize_step_profile(const std::vector<TraceSpan>& spans,
                                          const std::vector<DeviceActivity>& activities,
                                          const StepProfileOptions& options = {});

// The summary as the run prints it: a heading naming the iterations and rank, the device's busy
// and idle time, the stage table and the largest gaps. `device_note` says why no device activity
// was recorded (printed when there is none).
std::string format_step_profile(const StepProfileSummary& summary, int64_t first_iteration,
                                int64_t last_iteration, int rank, const std::string& device_note);

// One rank's line in the table of every rank that rank 0 prints after a window of a multi-rank
// run: where a straggler, or a rank waiting on the others, shows.
struct RankProfile {
  bool profiled = false;  // the rank recorded the window (--profile-ranks, one recorder)
  bool has_device = false;
  int64_t steps = 0;
  int64_t wall_ns = 0;
  int64_t busy_ns = 0;
  int64_t host_bound_idle_ns = 0;  // idle gaps whose next work the host queued mid-gap
  // Host time in the ranges where a rank waits on the others: the data-parallel reductions
  // (grad_sync), pipeline receives (pipeline.wait), and the MoE exchange (moe.dispatch,
  // moe.combine and their backward: with the synchronising exchange the host waits there for
  // the counts; their compute is in the figure too).
  int64_t grad_sync_ns = 0;
  int64_t pipeline_wait_ns = 0;
  int64_t moe_exchange_ns = 0;
};

RankProfile rank_profile(const StepProfileSummary& summary);
// The figures as numbers (to gather them over the ranks) and back.
std::vector<double> rank_profile_fields(const RankProfile& p);
RankProfile rank_profile_of_fields(const double* fields);
inline constexpr int64_t kRankProfileFields = 9;

// The table of every rank: per step, wall time, device busy share, idle waiting on the host,
// and the host's time in the waiting ranges.
std::string format_rank_profiles(const std::vector<RankProfile>& ranks, int64_t first_iteration,
                                 int64_t last_iteration);

// The records as a Chrome trace (JSON object format, microseconds from the window's begin).
nlohmann::json step_profile_trace(const std::vector<TraceSpan>& spans,
                                  const std::vector<DeviceActivity>& activities, int rank);

}  // namespace moe::train
