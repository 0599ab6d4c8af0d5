// The time picture of a pipeline schedule (pipeline_schedule.h): every rank's compute actions
// placed in time when all ranks run their lists at once (run_pipeline_schedules: blocking
// batched p2p), the makespan and the pipeline bubble, and a text rendering for logs and docs.
//
// Bubble: with makespan T and busy_r the compute time of rank r, rank r idles T - busy_r
// (waiting in warm-up and cool-down, and after its last action). Two ratios:
//   bubble_fraction = idle / (idle + busy) = idle / T     (the share of the time lost)
//   bubble_ratio    = idle / busy                          (relative to the ideal time)
// overall (summed over ranks) and per rank. With p2p time 0 and forward / backward times f / b
// per chunk, Megatron's formulas hold for the ratio:
//   1F1B (v = 1)             idle = (p - 1)(f + b) per rank, bubble_ratio = (p - 1) / m
//   interleaved (v chunks)   bubble_ratio = (p - 1) / (v m)  (idle (p - 1)(f + b) per rank, the
//                            busy time v m (f + b))
// so bubble_fraction = (p - 1) / (m + p - 1), resp. (p - 1) / (v m + p - 1).
//
// Rendering: one row per rank, one character per time unit: a forward shows its micro-batch as
// a lower-case letter (a = 0, b = 1, ..., wrapping after z), a backward the same letter in
// upper case, '.' is idle. With several chunks a second row under each rank shows each busy
// cell's chunk (0-9). The last lines give the makespan and the bubble.
#pragma once

#include <string>
#include <vector>

#include "moe/train/pipeline_schedule.h"

namespace moe::train {

struct PipelineDurations {
  double forward = 1.0;   // one chunk's forward of one micro-batch
  double backward = 2.0;  // one chunk's backward
  double p2p = 0.0;       // one batch of point-to-point transfers
};

struct PipelineTimelineSlot {
  PipelineActionKind kind = PipelineActionKind::forward;  // forward or backward
  int microbatch = 0;
  int chunk = 0;
  double start = 0.0;
  double end = 0.0;
};

struct PipelineTimeline {
  std::vector<std::vector<PipelineTimelineSlot>> ranks;  // compute slots, in order, per rank
  double makespan = 0.0;
  std::vector<double> busy;                  // per rank: compute time
  std::vector<double> idle;                  // per rank: makespan - busy
  std::vector<double> rank_bubble_fraction;  // per rank: idle / makespan
  double bubble_fraction = 0.0;              // sum idle / (ranks x makespan)
  double bubble_ratio = 0.0;                 // sum idle / sum busy (Megatron's bubble)
};

// Runs the lists (throws moe::Error as run_pipeline_schedules does on a deadlock or a mismatched
// send) and measures them.
PipelineTimeline pipeline_timeline(const std::vector<std::vector<PipelineAction>>& schedules,
                                   const PipelineDurations& durations = {});

// The text picture; time_unit is the time of one character column (a slot covers the columns
// from floor(start / unit) up to, not including, ceil(end / unit)).
std::string render_pipeline_timeline(const PipelineTimeline& timeline, double time_unit = 1.0);

}  // namespace moe::train
