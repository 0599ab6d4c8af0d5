// The start-up memory report of a run on several ranks: what each rank holds for the model's
// parameters, their gradients and the optimizer's state, and, after the first iteration, the
// measured peak, gathered to rank 0, which prints one line per rank:
//
//   memory per rank (MiB): parameters | gradients (fp32 main) | optimizer state (masters + moments)
//     rank 0:     1.92 |     1.92 |     1.92
//     rank 1:     1.92 |     1.92 |     1.92
//   peak memory after iteration 1 (MiB, process peak RSS): rank 0 412.3, rank 1 410.8
//
// What each figure counts, for this rank:
//   parameters  the bytes of the parameter values it holds: the data-parallel buffers
//               (param_buffer.h; alignment and padding included) when it has them, else every
//               parameter's value (its expert shard under EP x ETP)
//   gradients   the same for the fp32 main gradients (grad buffers, else Parameter::grad)
//   optimizer   AdamW: the bytes of its state() tensors (the moments, and the fp32 masters of
//               16-bit models); the distributed optimizer: state_bytes(), its shard of them,
//               which falls as 1 / (data-parallel group size)
//   peak        on a GPU the caching allocator's peak of memory held by tensors
//               (core/allocator.h memory_stats); on the CPU the process's peak resident set
//               (VmHWM of /proc/self/status; getrusage's ru_maxrss where that is missing), which
//               covers every rank of the process when ranks are threads
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/device.h"
#include "moe/dist/process_group.h"
#include "moe/nn/gpt_model.h"
#include "moe/train/trainer.h"

namespace moe::train {

struct RankMemory {
  int64_t parameter_bytes = 0;
  int64_t gradient_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t peak_bytes = 0;  // 0 until measured (measure_peak_memory)
};

// This rank's holdings (peak_bytes left 0).
RankMemory rank_memory(nn::GPTModel& model, Trainer& trainer);

// The measured peak of this rank on `device` (see above).
int64_t measure_peak_memory(Device device);

// Every rank's figures in rank order, on every rank: an all_gather over `world` of a small
// tensor on `device` (the world's backend must take it: a GPU with NCCL). Collective: every
// member calls it. Null world: {mine}.
std::vector<RankMemory> gather_rank_memory(const RankMemory& mine,
                                           const std::shared_ptr<dist::ProcessGroup>& world,
                                           Device device);

// The lines of the report (above): the holdings of every rank, and the peaks after
// `iteration` (the second form; peak_bytes of every rank).
std::string format_memory_report(const std::vector<RankMemory>& ranks);
std::string format_peak_memory(const std::vector<RankMemory>& ranks, int64_t iteration,
                               Device device);

}  // namespace moe::train
