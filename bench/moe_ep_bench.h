// `moe bench moe-ep`: the MoE layer under expert parallelism on the ranks of a launch (`moe
// launch --nproc-per-node N bench moe-ep`, `mpirun -np N moe bench moe-ep`, torchrun, srun;
// one process is a world of one), for expert-parallel weak scaling (the same tokens per GPU,
// the experts split over EP) and the throughput of the dispatch/combine exchange.
//
// Each rank joins the world (dist/init.h), builds the layer of a shape (bench/moe_bench_shapes.h;
// bf16 on a GPU, f32 on the CPU) with the expert groups of ETP 1 x EP x EDP (EP =
// --expert-model-parallel-size, default the world size; EDP = world / EP replicas run the same
// thing on their own tokens), and its own random input x [T, H] and output gradient dy, seeded
// by its rank. Per row (shape x tokens x routing x exchange) it runs --warmup steps, meets the
// others at a barrier, then times --iters steps (zero_grad, forward, backward) with device
// events, the layer's stages among them (MoELayer::stage_hook). A row's figures, T = tokens
// per rank, K = top-k, H = hidden, F = expert FFN width, S = shared-expert width:
//   fwd+bwd ms     the median step, the slowest rank's (all-reduce max)
//   TFLOP/s/GPU    3 x (6 T K H F + 6 T H S) / time: the expert GEMMs only, as moe-layer
//                  counts them; "vs GEMM" divides by rank 0's dense GEMM rate (bench/ceilings.h)
//   max/mean load  of the global expert counts: every rank's routed counts summed (all-reduce)
//   stage ms       mean device time over the timed steps of the stages "dispatch" and
//                  "combine" (forward) and "combine.bwd" and "dispatch.bwd" (backward), the
//                  slowest rank's; a stage holds its permutes as well as its exchange.
//   GB/s           the exchange's throughput, dispatch and combine: B / stage time, with
//                  B = R x H x element size, R = the routed slots of this rank's tokens whose
//                  expert lives on another EP rank (counted on the host from the last step's
//                  routing: the rows it sends away, and gets back in the combine); the minimum
//                  over ranks. The routing probabilities and the per-expert counts that travel
//                  with the rows are not counted, nor is the sync-free exchange's padding (it
//                  moves (EP - 1) x C rows per rank whatever the routing); rows past a short
//                  slot are counted although they stay behind.
//   slots          sync-free rows only: the largest number of rows one rank routed to one
//                  destination (peak, slot_usage(), max over ranks) against the slot size C;
//                  "short" when the peak exceeds C, where a training step would run again with
//                  the synchronising exchange.
// The routings: balanced (--moe-router-force-load-balancing), natural (the router's own choice
// on random inputs), skewed (moe-layer's: an expert bias tilting the load to low experts).
// The exchanges: synchronising (the dispatcher's exchange sized on the host: for alltoall, one
// host sync per forward) and sync-free (--moe-expert-rank-capacity-factor = --rank-capacity-factor,
// fixed slots of C = ceil(T K F_rank / EP) rows per rank pair; alltoall dispatcher only). With
// EP 1 nothing is exchanged and the sync-free exchange is not used.
//
// Rank 0 prints the world, the ceilings and a markdown table, a row as soon as it is measured,
// and with --jsonl appends one JSON object per row to the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/dist/init.h"

namespace CLI {
class App;
}

namespace moe::bench {

struct MoEEpBenchOptions {
  std::vector<std::string> shapes;  // empty: the GPU's shapes, or tiny on the CPU
  std::vector<int64_t> tokens;      // per rank; empty: 8192 on GPU, 64 on CPU
  std::vector<std::string> routings{"balanced", "natural"};
  std::vector<std::string> exchanges{"synchronising", "sync-free"};
  double rank_capacity_factor = 1.5;   // the sync-free exchange's F
  int expert_model_parallel_size = 0;  // 0: the world size
  std::string dispatcher = "alltoall";
  std::string gemm_backend = "automatic";
  int warmup = 3;
  int iters = 10;
  std::string device;                    // cpu | cuda; "": cuda when this rank has a GPU
  bool cpu = false;                      // --cpu here, as the program's --cpu: --device cpu
  std::string jsonl;                     // append one JSON object per row here (rank 0)
  dist::DistributedOptions distributed;  // --distributed-backend, --distributed-timeout-minutes
};

// Adds `moe-ep` to `bench` (the `moe bench` app), writing into `options`.
CLI::App* add_moe_ep_bench_command(CLI::App& bench, MoEEpBenchOptions& options);

int run_moe_ep_bench(const MoEEpBenchOptions& options, bool force_cpu);

}  // namespace moe::bench
