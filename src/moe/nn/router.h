// Router: the gating linear layer z = x W_r^T computed in the router dtype (fp32 or fp64),
// then top-k routing (or sinkhorn, or forced balancing), the load-balancing losses, the
// capacity drop, and the aux-loss-free expert bias. Formulas: docs/algorithms.md "Router".
//
// Gradient rule: backward accumulates into weight.grad and returns dL/dx (written).
// The losses' gradients enter the logits in backward, scaled by `loss_scale` (the factor the
// main loss gradient carries: loss scale * cp / micro-batches), as Megatron does.
//
// Doing better than Megatron where it is known to fall short:
//  - the aux-loss counts come from the routing the tokens actually take (group limits and
//    expert bias included), not from a separate plain top-k;
//  - global_aux_loss: each rank computes the exact gradient of the global loss for its own
//    tokens, and multiplies it by DP x CP to undo the gradient averaging over DP x CP that
//    Megatron leaves 1/dp too small;
//  - expert bias works with softmax scores too (see ops::topk_routing_forward).
#pragma once

#include <cstdint>

#include "moe/nn/moe_config.h"
#include "moe/nn/moe_groups.h"
#include "moe/nn/parameter.h"
#include "moe/ops/router.h"

namespace moe::nn {

// What one forward saves for its backward, and its outputs.
struct RouterContext {
  // outputs
  Tensor probs;       // [T, K] router dtype; routing weights
  Tensor expert_ids;  // [T, K] i32; -1 where the capacity dropped the slot
  Tensor aux_loss;    // 0-d, the load-balancing loss (coefficient included), undefined if none
  Tensor z_loss;      // 0-d, undefined if none
  Tensor tokens_per_expert;  // [E] i64 local routed counts before dropping (for logging)
  // saved
  Tensor router_input;  // x in the router dtype, after jitter
  Tensor logits;        // [T, E]
  ops::TopKRouting routing;
  Tensor aux_scores;  // [T, E]
  Tensor aux_counts;  // [E] or [B, E] as used by the loss (router dtype)
  int64_t aux_total_tokens = 0;
  int64_t num_sequences = 1;
  uint64_t jitter_seed = 0;
  DType input_dtype = DType::f32;
  // Activation recomputation (recompute.h): set on the context a first forward left (its
  // outputs() alone), the forward runs again equal to it: the same jitter draw and global-aux
  // counts, and no step accumulator counts the tokens a second time.
  bool recompute = false;

  // What a recomputed layer keeps of the first forward: the outputs (probabilities, expert ids,
  // losses, counts: read by the loss, the logs and the recomputation), not the [T, H] / [T, E]
  // tensors the backward reads.
  RouterContext outputs() const;
};

class Router {
 public:
  Router(const MoEConfig& config, Device device, MoEGroups groups);

  // x [T, H] in the activation dtype; tokens ordered [S, B] with B = num_sequences.
  void forward(const Tensor& x, int64_t num_sequences, RouterContext& ctx);
  // d_probs [T, K] -> dL/dx [T, H] (x's dtype).
  Tensor backward(const Tensor& d_probs, RouterContext& ctx, double loss_scale);

  // End of an optimizer step: expert-bias update b_e += u * sign(mean(n) - n_e) with the
  // step's counts summed over TP x DP x CP, then the step accumulators reset.
  void finish_step();
  // The step's accumulators reset without the expert-bias update (a skipped step, or forward
  // passes that were not training: evaluation).
  void discard_step();

  // Forward passes run so far: the draw counter of --moe-input-jitter-eps (the jitter of a
  // forward is Philox(seed, count)); checkpointed, so a resumed run draws what the
  // uninterrupted one would.
  uint64_t forward_count() const { return forward_count_; }
  void set_forward_count(uint64_t count) { forward_count_ = count; }

  Parameter weight;    // [E, H] router dtype
  Tensor expert_bias;  // [E] f32 buffer (checkpointed), zero-initialised

 private:
  MoEConfig config_;
  Device device_;
  MoEGroups groups_;
  uint64_t forward_count_ = 0;
  Tensor step_tokens_per_expert_;    // [E] f32, summed over the step's micro-batches
  Tensor global_tokens_per_expert_;  // [E] f32, global_aux_loss accumulation
  int64_t global_micro_batches_ = 0;
};

}  // namespace moe::nn
