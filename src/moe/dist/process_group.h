// ProcessGroup: the collectives a parallel mapping needs, over a set of ranks, for CPU and
// CUDA tensors. Backends: Local (ranks are threads of one process: CI, CPU runs, emulating
// EP = 8 on one GPU) here; NCCL behind the same interface.
//
// Conventions (those of torch.distributed / NCCL):
//  - every member calls the same collectives in the same order; a collective returns once
//    this rank's output is complete (for CUDA tensors: enqueued on the current stream);
//  - gathers and scatters concatenate / split along dim 0; the "-v" forms take per-rank row
//    counts on the host (counts[r] rows from / to rank r);
//  - in-place all_reduce; out-of-place everything else, with outputs preallocated by the
//    caller (shapes checked; a mismatch names the collective, the rank and both shapes).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::dist {

enum class ReduceOp { sum, avg, max, min };

constexpr const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
    case ReduceOp::min:
      return "min";
  }
  return "?";
}

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;  // this rank's index in the group
  virtual int size() const = 0;
  // The members, as ranks of the world group, in group order.
  virtual const std::vector<int>& world_ranks() const = 0;
  virtual std::string backend() const = 0;

  virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
  // out [size * n, ...] = concat over ranks of in [n, ...].
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  // out [sum(counts), ...] = concat over ranks of in_r [counts[r], ...].
  virtual void all_gather_v(const Tensor& in, Tensor& out, std::span<const int64_t> counts) = 0;
  // in [size * n, ...]; out [n, ...] = sum over ranks of their in's chunk `rank`.
  virtual void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::sum) = 0;
  // in [sum(counts), ...]; out [counts[rank], ...].
  virtual void reduce_scatter_v(const Tensor& in, Tensor& out, std::span<const int64_t> counts,
                                ReduceOp op = ReduceOp::sum) = 0;
  // Sends rows [offset_r, offset_r + send_counts[r]) of in to rank r; receives
  // recv_counts[r] rows from rank r into out, in rank order.
  virtual void all_to_all_v(const Tensor& in, Tensor& out, std::span<const int64_t> send_counts,
                            std::span<const int64_t> recv_counts) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  // A group of the given members (ranks of *this* group, in the order given). Every member
  // of the new group must call it with the same list; non-members must not.
  virtual std::shared_ptr<ProcessGroup> new_subgroup(const std::vector<int>& ranks) = 0;
};

}  // namespace moe::dist
