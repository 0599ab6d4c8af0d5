// The MPI backend: ranks are processes started by mpirun (Open MPI), host tensors travel
// through MPI, CUDA tensors are staged through pinned host memory (so ranks may share a GPU:
// the tests of the multi-process code paths on one GPU or none). Training on several GPUs uses
// NCCL; this backend serves CPU runs and tests.
//
// Behaviour beyond the ProcessGroup contract (process_group.h):
//  - Every operation completes before it returns (its Work is a CompletedWork). For CUDA
//    tensors a rank synchronises its current stream before it reads a device input, and copies
//    results back on its current stream (synchronised before returning, as the staging buffer
//    is reused).
//  - Results are bitwise those of the Local backend: reductions support f64, f32, bf16, f16
//    (accumulated in fp32), i64, i32 and reduce in rank order 0, 1, 2, ... on the host with the
//    Local backend's code (local_reduce.h). reduce_scatter is an all-to-all of the chunks and a
//    rank-ordered reduction of what arrived; all_reduce is that reduce_scatter over the
//    elements then an all_gather (bandwidth-optimal, deterministic, the same on every rank).
//    Data movement takes any dtype (bytes).
//  - Messages larger than the message limit (INT_MAX bytes: MPI counts are int) are split; a
//    collective whose counts or displacements do not fit runs as point-to-point pieces.
//  - Call checks (on unless MOE_MPI_CHECK_CALLS=0 in the environment): before each collective
//    the members gather each other's call (collective, dtype, device kind, shapes, counts, op,
//    root; split lists) and this rank's argument errors, one small allgather(v), so that a
//    call that disagrees across ranks, or a bad argument on one rank, makes every member throw
//    (the same message, or "collective aborted: rank R failed: <what>") instead of hanging or
//    corrupting memory. Without them a bad argument throws on its rank only, and its peers wait
//    in the collective until the job ends (below). Point-to-point operations always send a
//    small header first, so a receive into a tensor of another dtype or shape throws, naming
//    both ranks and shapes.
//  - Errors of MPI calls (MPI_ERRORS_RETURN) throw moe::Error naming the MPI function, the
//    operation, the rank and MPI's error string.
//  - abort(reason) prints "[rank R host] reason" to stderr and calls MPI_Abort on
//    MPI_COMM_WORLD: mpirun ends every rank of the job. An exception that escapes a rank's main
//    should go through dist::report_and_abort (fatal.h), which does that for the world.
//  - Timeouts: MPI has none of its own. Every operation is a WatchedCall (call_watchdog.h): once
//    the rendezvous has set the timeout (--distributed-timeout-minutes, dist/init.h), a call
//    that outlasts it ends its rank with a message naming the call and the group, and mpirun
//    ends the job. A rank that dies makes mpirun (or `moe launch`) end the job.
//  - Threads: MPI is initialised with MPI_THREAD_MULTIPLE when the library provides it; then
//    different threads may use different groups (one group is used by one thread at a time,
//    as a NCCL communicator). If the library provides only MPI_THREAD_FUNNELED (or SERIALIZED),
//    only the thread that called init_mpi_world may use the groups.
#pragma once

#include <cstddef>
#include <memory>

#include "moe/dist/process_group.h"

namespace moe::dist {

// Whether this build has the MPI backend (MOE_WITH_MPI).
bool have_mpi();

// Initialises MPI (once per process; later calls return the same world) and returns the group
// of every rank of MPI_COMM_WORLD (backend "mpi"). MPI is finalised at exit. It registers the
// world for dist::report_and_abort. Throws in a build without MPI.
std::shared_ptr<ProcessGroup> init_mpi_world();

// The largest message, in bytes, one MPI call carries (default INT_MAX); larger transfers are
// split into pieces. Tests lower it to exercise the split paths with small tensors.
void set_mpi_message_limit(size_t bytes);
size_t mpi_message_limit();

}  // namespace moe::dist
