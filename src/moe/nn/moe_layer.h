// MoELayer: the mixture-of-experts block of a transformer layer, as explicit stages
// (docs/design.md "The MoE layer, as data flows"):
//
//   route    Router: logits, top-k, losses, capacity           -> probs [T,K], ids [T,K]
//   dispatch TokenDispatcher preprocess / communicate / postprocess -> rows by local expert
//   experts  grouped (or sequential) SwiGLU experts, probs applied after the activation
//   combine  TokenDispatcher preprocess / communicate / postprocess -> y [T,H]
//   (+ the shared expert on every token, added to y)
//
// Tensor parallelism (tensor_parallel.h): the layer always works on a sequence shard, as
// Megatron's MoE layer does under sequence parallelism: its input is one already, or, without
// --sequence-parallel, each TP rank takes its block of the (replicated) sequence and the output
// is gathered again. The router (replicated, partial gradients) sees the full hidden state of
// this rank's tokens; the dispatcher moves them over the expert grid; the shared expert is
// split over TP like a dense MLP.
// Backward walks the stages in reverse with the same groups. Gradient rule: parameter
// gradients accumulate (micro-batches add up), dL/dx is written. Per-call state lives in an
// MoEContext the caller owns, so several micro-batches can be in flight (pipelining) and a
// forward can be recomputed.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "moe/nn/experts.h"
#include "moe/nn/moe_config.h"
#include "moe/nn/moe_groups.h"
#include "moe/nn/router.h"
#include "moe/nn/shared_expert.h"
#include "moe/nn/tensor_parallel.h"
#include "moe/nn/token_dispatcher.h"

namespace moe::nn {

struct MoEContext {
  Shape input_shape;
  RouterContext router;
  DispatchContext dispatch;
  ExpertsContext experts;
  SharedExpertContext shared;

  // What recomputation keeps of a first forward: the router's outputs and the input's shape
  // (recompute.h).
  MoEContext outputs() const;
};

class MoELayer {
 public:
  MoELayer(const MoEConfig& config, Device device, MoEGroups groups = {},
           const TensorParallel& tp = {});

  // x [S, B, H] (Megatron's layout; B sequences, used by seq_aux_loss) or [T, H] (one sequence).
  Tensor forward(const Tensor& x, MoEContext& ctx);
  // dy like x -> dx like x. `loss_scale` multiplies the aux/z-loss gradients (the factor the
  // main loss gradient carries).
  Tensor backward(const Tensor& dy, MoEContext& ctx, double loss_scale = 1.0);

  // The block in parts, for per-layer graphs of the router (layer_graphs.h); forward() and
  // backward() are their chains. Tokens are this rank's rows [T, H].
  //   tokens_of      x -> tokens (this rank's sequence shard, flattened); sets input_shape
  //   route_forward  the router, the shared expert unless it overlaps the exchange (its output
  //                  returned; undefined otherwise), and with `preprocess` the dispatcher's
  //                  preprocessing (the permutation and the splits)
  //   routed_forward the rest of the dispatch, the experts, the combine, the shared expert's sum
  //   output_of      tokens -> like x (the sequence shards gathered)
  // and backward: grads_of (dy like x -> d tokens), routed_backward (the combine's, experts' and
  // dispatch's backwards, the overlapped shared expert's), route_backward (the router's, then
  // the shared expert's unless overlapped: d tokens).
  struct RoutedGrads {
    Tensor probs, x;  // d routing probabilities, d tokens through the dispatch
    Tensor shared;    // d tokens through the shared expert when it overlapped (else undefined)
  };
  Tensor tokens_of(const Tensor& x, MoEContext& ctx) const;
  Tensor route_forward(const Tensor& tokens, int64_t num_sequences, MoEContext& ctx,
                       bool preprocess);
  Tensor routed_forward(const Tensor& tokens, Tensor shared_out, MoEContext& ctx,
                        bool preprocessed);
  Tensor output_of(const Tensor& y, const MoEContext& ctx) const;
  Tensor grads_of(const Tensor& dy, const MoEContext& ctx) const;
  RoutedGrads routed_backward(const Tensor& d_tokens, MoEContext& ctx);
  Tensor route_backward(const RoutedGrads& grads, const Tensor& d_tokens, MoEContext& ctx,
                        double loss_scale);
  bool overlaps_shared_expert() const { return shared_expert && config_.moe_shared_expert_overlap; }
  // End of an optimizer step: expert-bias update, per-step accumulators reset.
  void finish_step() { router.finish_step(); }
  void discard_step() { router.discard_step(); }
  // The dispatcher's sync-free exchange (token_dispatcher.h): its budget's use since the last
  // reset, and the synchronising exchange for a step's redo (or evaluation).
  TokenDispatcher::SlotUsage slot_usage() const { return dispatcher_->slot_usage(); }
  void reset_slot_usage() { dispatcher_->reset_slot_usage(); }
  void set_synchronising_dispatch(bool on) { dispatcher_->set_synchronising(on); }

  std::vector<Parameter*> parameters();
  // The parameters of the route stages (route_forward / route_backward): the router's and the
  // shared expert's.
  std::vector<Parameter*> route_parameters();
  void zero_grad();
  const MoEConfig& config() const { return config_; }

  // Called after each stage with its name ("route", "dispatch", "experts", "combine",
  // "shared"; backward: "combine.bwd", "experts.bwd", "dispatch.bwd", "route.bwd",
  // "shared.bwd"), so a profiler can timestamp the stages. Unset: no cost.
  std::function<void(const char* stage)> stage_hook;

  // --recompute-modules shared_experts (recompute.h): after a first forward the shared expert
  // keeps only its input; its backward runs its forward again first.
  void set_recompute_shared_expert(bool on) { recompute_shared_expert_ = on; }

  Router router;
  Experts experts;
  std::optional<SharedExpert> shared_expert;

 private:
  MoEConfig config_;
  MoEGroups groups_;
  TensorParallel tp_;  // the model's (sequence_parallel: whether the input is a shard already)
  std::unique_ptr<TokenDispatcher> dispatcher_;
  bool recompute_shared_expert_ = false;

  Tensor shared_forward(const Tensor& tokens, MoEContext& ctx);
  Tensor shared_backward(const Tensor& d_tokens, MoEContext& ctx);
};

}  // namespace moe::nn
