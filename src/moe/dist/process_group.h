// ProcessGroup: the collectives and point-to-point calls a parallel mapping needs, over a set of
// ranks, for CPU and CUDA tensors. Backends: Local (ranks are threads of one process: tests, CPU
// runs, emulating EP = 8 on one GPU), MPI (processes; CPU tensors, CUDA tensors staged through
// pinned host memory) and NCCL (one process per GPU, CUDA tensors).
//
// Conventions (those of torch.distributed / NCCL):
//  - every member calls the same collectives in the same order;
//  - gathers and scatters concatenate / split along dim 0; the "-v" forms take per-rank row
//    counts on the host (counts[r] rows from / to rank r);
//  - in-place all_reduce and broadcast; out-of-place everything else, with outputs preallocated
//    by the caller (shapes checked; a mismatch names the collective, the rank and both shapes);
//  - an output never aliases an input.
//
// Synchronous and asynchronous forms. Each operation has an `_async` form that returns a Work
// handle; the plain form is the `_async` form followed by Work::wait(). After wait() returns,
// the result is usable in program order: host tensors are complete, and for CUDA tensors the
// calling thread's current stream has been made to wait for the communication (the host is not
// blocked; a backend may also complete the work before returning). Until then the caller must
// neither read the outputs nor write the inputs. A Work keeps its tensors' storage alive, and
// backends that communicate on their own streams record those streams on the tensors' blocks
// (moe::record_stream), so freeing a tensor early never lets the allocator hand its memory to
// someone else while communication still reads or writes it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "moe/core/event.h"
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

// The handle of an operation in flight.
class Work {
 public:
  virtual ~Work() = default;
  // Makes the result usable in program order (see above). Throws moe::Error if the operation
  // failed or timed out (after which the group is aborted).
  virtual void wait() = 0;
  // Blocks the calling thread until the operation has completed on its device.
  virtual void synchronize() = 0;
  // True once the operation has completed; never blocks.
  virtual bool is_completed() = 0;
  // For CUDA work: an event recorded after the operation on the stream it ran on, which a
  // compute stream can wait on (Event::block) without blocking the host. Null for host work.
  virtual const Event* event() const { return nullptr; }
};

// A Work that is already complete (backends that finish an operation before returning).
class CompletedWork final : public Work {
 public:
  void wait() override {}
  void synchronize() override {}
  bool is_completed() override { return true; }
};

// One point-to-point operation of a batch: send `tensor` to, or receive it from, `peer` (a rank
// of the group). Between two ranks, sends and receives match in the order they are issued.
struct P2POp {
  enum class Kind { send, recv };
  Kind kind = Kind::send;
  Tensor tensor;  // recv: preallocated, its shape and dtype must match the sender's
  int peer = -1;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;  // this rank's index in the group
  virtual int size() const = 0;
  // The members, as ranks of the world group, in group order.
  virtual const std::vector<int>& world_ranks() const = 0;
  virtual std::string backend() const = 0;  // "local", "mpi", "nccl"

  // ---- asynchronous forms: each backend implements these --------------------------------
  virtual std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
  // out [size * n, ...] = concat over ranks of in [n, ...].
  virtual std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) = 0;
  // out [sum(counts), ...] = concat over ranks of in_r [counts[r], ...].
  virtual std::unique_ptr<Work> all_gather_v_async(const Tensor& in, Tensor& out,
                                                   std::span<const int64_t> counts) = 0;
  // in [size * n, ...]; out [n, ...] = reduction over ranks of their in's chunk `rank`.
  virtual std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out,
                                                     ReduceOp op = ReduceOp::sum) = 0;
  // in [sum(counts), ...]; out [counts[rank], ...].
  virtual std::unique_ptr<Work> reduce_scatter_v_async(const Tensor& in, Tensor& out,
                                                       std::span<const int64_t> counts,
                                                       ReduceOp op = ReduceOp::sum) = 0;
  // Sends rows [offset_r, offset_r + send_counts[r]) of in to rank r; receives
  // recv_counts[r] rows from rank r into out, in rank order.
  virtual std::unique_ptr<Work> all_to_all_v_async(const Tensor& in, Tensor& out,
                                                   std::span<const int64_t> send_counts,
                                                   std::span<const int64_t> recv_counts) = 0;
  virtual std::unique_ptr<Work> broadcast_async(Tensor& t, int root) = 0;
  // A batch of sends and receives issued together (NCCL: one group call), so that a pipeline
  // stage's send-forward and receive-backward cannot deadlock against its neighbour's.
  virtual std::unique_ptr<Work> batch_p2p_async(std::span<const P2POp> ops) = 0;

  // ---- synchronous forms ----------------------------------------------------------------
  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum) { all_reduce_async(t, op)->wait(); }
  void all_gather(const Tensor& in, Tensor& out) { all_gather_async(in, out)->wait(); }
  void all_gather_v(const Tensor& in, Tensor& out, std::span<const int64_t> counts) {
    all_gather_v_async(in, out, counts)->wait();
  }
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::sum) {
    reduce_scatter_async(in, out, op)->wait();
  }
  void reduce_scatter_v(const Tensor& in, Tensor& out, std::span<const int64_t> counts,
                        ReduceOp op = ReduceOp::sum) {
    reduce_scatter_v_async(in, out, counts, op)->wait();
  }
  void all_to_all_v(const Tensor& in, Tensor& out, std::span<const int64_t> send_counts,
                    std::span<const int64_t> recv_counts) {
    all_to_all_v_async(in, out, send_counts, recv_counts)->wait();
  }
  void broadcast(Tensor& t, int root) { broadcast_async(t, root)->wait(); }
  void batch_p2p(std::span<const P2POp> ops) { batch_p2p_async(ops)->wait(); }
  void send(const Tensor& t, int peer) {
    const P2POp op{P2POp::Kind::send, t, peer};
    batch_p2p({&op, 1});
  }
  void recv(Tensor& t, int peer) {
    const P2POp op{P2POp::Kind::recv, t, peer};
    batch_p2p({&op, 1});
  }
  // Returns when every member has entered the barrier (and, for CUDA backends, the work each
  // member queued before it on its current stream has completed).
  virtual void barrier() = 0;

  // ---- subgroups --------------------------------------------------------------------------
  // Collective over this group (MPI_Comm_split, ncclCommSplit): every member calls it with the
  // same `groups`, disjoint lists of ranks of this group. Returns the group whose list holds
  // this rank, its members in the listed order, or nullptr when no list holds it.
  virtual std::shared_ptr<ProcessGroup> split(const std::vector<std::vector<int>>& groups) = 0;
  // Collective over this group, as split: the group of `ranks` for its members, nullptr for
  // every other member.
  std::shared_ptr<ProcessGroup> new_subgroup(const std::vector<int>& ranks) {
    return split({ranks});
  }

  // ---- failure ----------------------------------------------------------------------------
  // Ends every operation in flight on this group and its subgroups, on every rank that can be
  // reached (NCCL: ncclCommAbort; MPI: MPI_Abort; Local: the shared world), so that nobody
  // hangs. `reason` is reported by the ranks that were waiting.
  virtual void abort(const std::string& reason) = 0;
};

// Every rank's `values` (the same count on each rank), rank after rank: the gathers of a few
// numbers per rank for reports and flags (memory, profiles, which ranks hold a copy), staged
// through a tensor on `device` (NCCL gathers device memory).
template <class T>
std::vector<T> all_gather_values(ProcessGroup& group, const std::vector<T>& values, Device device) {
  const auto count = static_cast<int64_t>(values.size());
  const Tensor in = Tensor::from_vector(values, {count}, device);
  Tensor out = Tensor::empty({group.size() * count}, in.dtype(), device);
  group.all_gather(in, out);
  return out.to(Device::cpu()).template to_vector<T>();
}

// Timeouts of collectives: an operation that has not completed after this long aborts the group
// and throws naming the operation (Megatron's --distributed-timeout-minutes; its default is 10).
struct CollectiveTimeout {
  std::chrono::milliseconds value{std::chrono::minutes(10)};
};

}  // namespace moe::dist
