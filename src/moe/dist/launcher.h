// The process side of `moe launch` (apps/launch_cmd.h): start this node's ranks as child
// processes with torchrun's variables, pass signals on, and when one rank fails, end the others.
//
// Each child runs `program` (default: this executable, /proc/self/exe) with `args`, in the
// launcher's environment plus
//   RANK = node_rank * nproc_per_node + local rank, WORLD_SIZE = nproc_per_node * nnodes,
//   LOCAL_RANK, LOCAL_WORLD_SIZE = nproc_per_node, GROUP_RANK = node_rank,
//   MASTER_ADDR, MASTER_PORT
// and nothing else changed (NCCL_*, CUDA_VISIBLE_DEVICES and the rest are the user's).
// Children write to the launcher's stdout and stderr directly; each rank prefixes its own lines.
// Each child leads a process group of its own (so that ending it ends whatever it started) and
// dies with the launcher (PR_SET_PDEATHSIG), so nothing outlives a launcher that was killed.
//
// While the ranks run:
//  - SIGINT / SIGTERM / SIGHUP to the launcher are sent on to every rank; the launcher then
//    waits for them (SIGKILL after `grace`; a second signal kills at once) and exits with
//    128 + the signal's number;
//  - the first rank seen to exit non-zero or by a signal ends the others: SIGTERM, then SIGKILL
//    after `grace` (SIGCHLD wakes the launcher, so it sees ranks end in the order they do;
//    a rank that fails because another failed, seconds later or microseconds, is the second).
//    The launcher prints
//      "moe launch: rank 1 (pid 4242) exited with status 3; ended the other ranks"
//      "moe launch: rank 1 (pid 4242) was killed by signal SIGSEGV; ended the other ranks"
//    and returns that status (128 + the signal's number for a signal);
//  - when every rank exits with 0, so does the launcher.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace moe::dist {

struct LaunchOptions {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: a free port of this host (one node only)
  std::string program = "/proc/self/exe";
  std::string argv0;                      // the children's argv[0]; empty: program
  std::vector<std::string> args;          // the children's arguments after argv[0]
  std::chrono::milliseconds grace{5000};  // SIGTERM -> SIGKILL
};

struct LaunchResult {
  int exit_code = 0;
  int failed_rank = -1;   // the rank whose end stopped the others; -1: none
  int signal = 0;         // a signal the launcher received and passed on; 0: none
  std::vector<int> pids;  // by local rank
  std::string message;    // the last line printed ("" when all ranks succeeded)
};

// Checks `options` (moe::Error naming the flag), starts the ranks, prints a start-up line and
// the outcome to `log`, and returns once every child has ended.
LaunchResult launch_ranks(const LaunchOptions& options, std::FILE* log = stderr);

// "SIGSEGV" (or "signal 42").
std::string signal_name(int signal);

}  // namespace moe::dist
