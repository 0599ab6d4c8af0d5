// `moe bench comm`: the collectives of a ProcessGroup (dist/process_group.h) on any backend and
// world size, timed per message size as nccl-tests times them, so the figures compare with
// theirs and with each other across backends.
//
// Each rank joins the world of its launch (dist/init.h: `moe launch`, torchrun, srun, mpirun;
// one process is a world of one). For every chosen op and every size from --min-size to
// --max-size (x --step-factor), each rank runs --warmup calls, meets the others at a barrier,
// then times --iters calls (device timers on the current stream for CUDA tensors); the time of
// a size is the slowest rank's mean per call (an all-reduce with max), and only rank 0 prints.
//
// "size" is nccl-tests' size: the bytes of the larger buffer of the call on one rank,
// n = world size:
//   all_reduce      the buffer (in place)                          busbw = algbw * 2(n-1)/n
//   all_gather      the gathered output (n chunks of size / n)     busbw = algbw * (n-1)/n
//   reduce_scatter  the input (n chunks of size / n)               busbw = algbw * (n-1)/n
//   all_to_all      the send buffer (size / n to each rank)        busbw = algbw * (n-1)/n
//   all_to_all_v    the send buffer, split unevenly: this rank sends peer p a share
//                   proportional to 1 + (rank + p) % n, so every rank still sends and receives
//                   size bytes in all (the skew of MoE token dispatch)  busbw as all_to_all
// with algbw = size / time (GB/s, 10^9 bytes). busbw is the bandwidth each rank's links would
// need for a ring algorithm to take that time, so it can be read against the hardware's link
// bandwidth whatever n is. Element counts are rounded down to a multiple of n.
//
// Before timing, each (op, size) is checked once: every element of the output against the
// value the ranks' inputs make (reductions: exact for integers and f32/f64; within 1% for
// bf16/f16). --no-check skips it.
//
// The test hook of dist/init.h (MOE_TEST_FAIL_RANK / MOE_TEST_FAIL_AT) applies: CI ends a rank
// of `moe launch ... bench comm` on purpose to test the failure path.
#pragma once

#include <string>
#include <vector>

#include "moe/dist/init.h"

namespace CLI {
class App;
}

namespace moe::bench {

struct CommBenchOptions {
  std::vector<std::string> ops{"all_reduce", "all_gather", "reduce_scatter", "all_to_all",
                               "all_to_all_v"};
  std::string min_size = "1K";  // bytes; K, M, G suffixes are powers of 1024
  std::string max_size = "1G";
  int step_factor = 2;
  std::string dtype = "f32";
  int iters = 20;
  int warmup = 5;
  std::string device;  // cpu | cuda; "": cuda when this rank has a GPU
  bool check = true;
  std::string jsonl;                     // append one JSON object per (op, size) here (rank 0)
  dist::DistributedOptions distributed;  // --distributed-backend, --distributed-timeout-minutes
};

// Adds `comm` to `bench` (the `moe bench` app), writing into `options`.
CLI::App* add_comm_bench_command(CLI::App& bench, CommBenchOptions& options);

int run_comm_bench(const CommBenchOptions& options, bool force_cpu);

// "64K" -> 65536; plain numbers are bytes; K/M/G (optionally KiB/MiB/GiB, any case) are
// powers of 1024. Throws moe::Error naming `flag`.
int64_t parse_byte_size(const std::string& text, const std::string& flag);
// nccl-tests' bus-bandwidth factor of an op over n ranks (see above).
double bus_bandwidth_factor(const std::string& op, int n);

}  // namespace moe::bench
