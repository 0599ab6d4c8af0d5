// The routed experts of one rank: E_local = E / EP experts, each a SwiGLU MLP whose FFN
// dimension is split over ETP ranks. Input rows arrive grouped by local expert.
//
//   fc1 [E_local, 2 F_local, H] = per expert [gate shard; up shard]   (Megatron's layout)
//   fc2 [E_local, H, F_local]
//   h1 = x fc1_e^T,  h = silu(gate) * up * p  (probs applied here: memory-efficient),
//   y = h fc2_e^T    (a partial sum over the F shard when ETP > 1: the dispatcher reduces it)
//
// `grouped` runs each GEMM as one grouped GEMM over all experts (--moe-grouped-gemm);
// otherwise a loop of dense GEMMs per expert (Megatron's SequentialMLP). Both compute the same
// function. Gradient rule: backward accumulates fc1.grad / fc2.grad (an expert without rows
// adds zero) and writes the gradients of x and probs.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "moe/nn/moe_config.h"
#include "moe/nn/parameter.h"

namespace moe::nn {

struct ExpertsContext {
  Tensor x;                  // [R, H]
  Tensor probs;              // [R] f32
  Tensor fc1_out;            // [R, 2 F_local]
  Tensor activation;         // [R, F_local]
  Tensor tokens_per_expert;  // [E_local] on the device
  // The counts on the host: the dispatcher's when it had them, else read when a grouped GEMM
  // first needs them (never when every call reads them on the device: the cutlass backend).
  std::vector<int64_t> host_tokens_per_expert;
};

class Experts {
 public:
  // ep_rank / etp_rank select this rank's experts and FFN shard of the global weights.
  Experts(const MoEConfig& config, Device device, int ep_rank, int etp_rank);

  // x [R, H], probs [R] (f32), tokens_per_expert [E_local] (device); host counts optional.
  Tensor forward(const Tensor& x, const Tensor& probs, const Tensor& tokens_per_expert,
                 std::span<const int64_t> host_tokens_per_expert, ExpertsContext& ctx);
  struct Grads {
    Tensor x;      // [R, H]
    Tensor probs;  // [R] f32
  };
  Grads backward(const Tensor& grad_y, ExpertsContext& ctx);

  // Sets this rank's shard from the full weights fc1 [E, 2F, H], fc2 [E, H, F] (any device).
  void load_full(const Tensor& fc1_full, const Tensor& fc2_full);
  // The global index (in the [E, 2F, H] tensor) of this rank's fc1 row `row` of local expert
  // `local_expert`, used to initialise shards exactly as the full tensor would be.
  int64_t global_fc1_row(int64_t local_expert, int64_t row) const;

  Parameter fc1;
  Parameter fc2;

 private:
  Tensor forward_sequential(const Tensor& x, const Tensor& probs, ExpertsContext& ctx);
  Grads backward_sequential(const Tensor& grad_y, ExpertsContext& ctx);
  // The host counts for a grouped GEMM call a, b -> out (ops::grouped_gemm_reads_counts;
  // `accumulate` as the weight gradient's): empty when it reads them on the device, else ctx's,
  // read to the host first if need be.
  std::span<const int64_t> host_counts_for(const Tensor& a, const Tensor& b, const Tensor& out,
                                           ExpertsContext& ctx, bool accumulate = false) const;

  MoEConfig config_;
  int ep_rank_ = 0;
  int etp_rank_ = 0;
};

}  // namespace moe::nn
