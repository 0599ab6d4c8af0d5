// The NCCL backend: one process per GPU, CUDA tensors, every operation of ProcessGroup
// (process_group.h) as NCCL calls on the group's own communication stream. No NCCL header is
// exposed: the unique id travels as 128 bytes, which the launcher distributes (MPI broadcast,
// a TCP store...) before every rank calls make_nccl_world with it.
//
// Streams and lifetimes. Each group has its own stream (non-blocking) on its device. An
// operation records an event on the caller's current stream and makes the communication
// stream wait on it (the inputs are ready), runs there, and records a completion event that
// the returned Work holds: Work::wait() makes the caller's current stream wait on it (the host
// is not blocked), synchronize() blocks the host, is_completed() polls, event() exposes it.
// The Work keeps the operation's tensors alive, and their blocks are marked as used by the
// communication stream (moe::record_stream), so the caching allocator does not reuse them
// before the operation has completed even if the caller frees them at once.
//
// Beyond the ProcessGroup contract:
//  - tensors are CUDA tensors on the group's device, or host tensors, which travel through
//    device copies and are complete when the call returns (a completed Work): for the odd
//    seed or flag; bulk data belongs on the device. Reductions take f64, f32, bf16, f16, i64,
//    i32 and (unlike the other backends) u8, with NCCL's own arithmetic: sums of floats follow
//    NCCL's ring or tree order, not rank order, and bf16/f16 are rounded at each step, so they
//    may differ from the Local backend's in the last bits beyond two ranks (with two, a + b is
//    a + b); avg is ncclAvg (floats: each input times 1/size, then the sum; integers: the sum
//    divided by size, truncated). Gathers, scatters, broadcast and point-to-point move bytes
//    and take any dtype (fp8 too).
//  - all_gather_v and all_to_all_v are grouped ncclSend/ncclRecv (one group call; zero-row
//    messages are skipped). reduce_scatter_v is one ncclReduce per destination rank in one
//    group call, as PyTorch does for uneven reduce-scatters: NCCL reduces over its own rings
//    and trees with every ReduceOp and no staging buffer, where sends plus a local reduction
//    would need size x counts[rank] rows of scratch and a reduction kernel per dtype and op.
//  - a rank's own arguments are checked with the messages of every backend
//    (collective_checks.h); peers' calls are not compared (NCCL has no such check: a call that
//    disagrees across ranks hangs until the timeout), except that split() compares the groups
//    every member passes (one small all_gather) and names the ranks that disagree.
//  - split() is ncclCommSplit (color = the index of the list holding this rank, key = its
//    position in it; ranks in no list pass NCCL_SPLIT_NOCOLOR and get nullptr).
//
// Failures. Communicators are non-blocking (ncclConfig_t::blocking = 0), so that their
// creation and every operation can be abandoned: a call that is still "in progress" after the
// timeout aborts the communicators. A watchdog thread per world polls the operations in flight
// and ncclCommGetAsyncError; when an operation has not completed within NcclOptions::timeout
// (Megatron's --distributed-timeout-minutes, 10 by default) or NCCL reports an error, it
// prints "[rank R host] NCCL <op> #<seq> on world ranks [...] timed out after Ns", calls
// ncclCommAbort on every communicator of the world and, by default, ends the process with
// status 1: a rank whose collective failed cannot go on without diverging from its peers, and
// the launcher then stops the others (PyTorch's ProcessGroupNCCL watchdog does the same:
// TORCH_NCCL_ASYNC_ERROR_HANDLING tears the process down). With exit_on_failure = false it
// only aborts, and every Work in flight and every later call throws moe::Error with that
// message instead. ProcessGroup::abort(reason) aborts this group's communicator and those
// split from it (other ranks are not reached: their own watchdogs time out).
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "moe/dist/process_group.h"

namespace moe::dist {

// ncclUniqueId's bytes (NCCL_UNIQUE_ID_BYTES).
using NcclUniqueId = std::array<char, 128>;

struct NcclOptions {
  // An operation (or the communicator's creation) not completed after this long fails.
  std::chrono::milliseconds timeout = CollectiveTimeout{}.value;
  // After a timeout or an NCCL error: end the process (true), or only abort the communicators
  // and make the waiting and later calls throw (false: tests, in-process restarts).
  bool exit_on_failure = true;
  // How often the watchdog looks at the operations in flight.
  std::chrono::milliseconds watchdog_interval{100};
  // Called by the watchdog with the failure's message before it aborts the communicators.
  std::function<void(const std::string& message)> on_failure;
};

// Whether this build has the NCCL backend (MOE_WITH_NCCL), and the version of the NCCL
// library loaded at run time (e.g. 22803 for 2.28.3; 0 without NCCL).
bool nccl_built();
int nccl_version();

// A fresh id for a new world (ncclGetUniqueId): made by one rank, sent to all the others.
NcclUniqueId nccl_unique_id();

// This process's rank of a world of `size` processes, on CUDA device `device` (which becomes
// the current device). Collective over the world: every rank calls it with the same id, and it
// returns once all have joined (or throws after options.timeout).
std::shared_ptr<ProcessGroup> make_nccl_world(const NcclUniqueId& id, int rank, int size,
                                              int device, const NcclOptions& options = {});

}  // namespace moe::dist
