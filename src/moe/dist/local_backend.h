// The Local backend: ranks are threads of one process, sharing memory. It serves the CPU tests
// of everything parallel, CPU runs, and emulating a parallel mapping (say EP = 8) on one GPU.
//
// Behaviour beyond the ProcessGroup contract (process_group.h):
//  - CPU and CUDA tensors; within one collective every member's tensors are on the same kind of
//    device (CUDA tensors may be on the same or different GPUs). For CUDA tensors a member
//    synchronises its current stream before publishing its input, and copies peers' data with
//    cudaMemcpyAsync / cudaMemcpyPeerAsync on its own current stream, synchronising that stream
//    before it lets peers go on; so a collective returns with the output complete.
//  - Reductions support f64, f32, bf16, f16 (accumulated in fp32), i64, i32, and sum in rank
//    order 0, 1, 2, ...: results are bitwise reproducible, identical on every rank, and the
//    same on CPU and CUDA. avg = sum / size (integer division for integers). Gathers,
//    all_to_all_v and broadcast copy bytes and take any dtype.
//  - Every member checks the whole call (collective, dtype, device kind, shapes, counts, op,
//    root) against every other member's and throws moe::Error naming the collective, the
//    ranks and the shapes. An output must not alias an input (all_reduce is in place).
//  - Any error in a collective, or an exception escaping a rank's function, aborts the shared
//    world: every rank blocked in (or later entering) a collective throws
//    moe::Error("collective aborted: rank R failed: <what>") (R a world rank) instead of
//    hanging. A rank whose function returns while peers wait for it in a collective aborts
//    the world too.
//  - Every operation completes before it returns (its Work is a CompletedWork).
//  - batch_p2p: a send copies its tensor into a FIFO mailbox per (sender, receiver) pair of
//    the group and returns; a receive takes the oldest message of its pair, waiting for it.
//    So sends and receives match in issue order per pair and a batch (sends and receives to
//    several peers, in any order) never deadlocks: the sends of a batch are published before
//    its receives wait. A receive whose tensor's dtype or shape differs from the message's
//    throws naming both ranks and both shapes.
//  - split checks every member passed the same lists (a collective over the parent); the k-th
//    split of a group builds the same groups on every member.
//  - abort(reason) aborts the shared world: waiting ranks throw
//    "collective aborted: rank R failed: <reason>".
#pragma once

#include <functional>
#include <memory>

#include "moe/dist/process_group.h"

namespace moe::dist {

// Runs fn on world_size threads, each with its own rank's world group (backend "local"), and
// returns when all have ended. If any rank threw, rethrows the exception of the rank whose
// failure aborted the world (the first to fail), else the first one thrown.
void run_local(int world_size, const std::function<void(std::shared_ptr<ProcessGroup> world)>& fn);

}  // namespace moe::dist
