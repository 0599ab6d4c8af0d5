#include "moe/nn/moe_layer.h"

#include "moe/core/trace_range.h"
#include "moe/ops/elementwise.h"

namespace moe::nn {

#define MOE_STAGE_DONE(name) \
  if (stage_hook) stage_hook(name)

MoELayer::MoELayer(const MoEConfig& config, Device device, MoEGroups groups,
                   const TensorParallel& tp)
    : router(config, device, groups),
      experts(config, device, groups.ep_rank(), groups.etp_rank()),
      config_(config),
      groups_(std::move(groups)),
      tp_(tp),
      dispatcher_(make_token_dispatcher(config, groups_)) {
  set_tp_replicated(router.weight, tp, /*partial_grad=*/true);
  if (config.moe_shared_expert_intermediate_size > 0)
    shared_expert.emplace(config, device, TensorParallel{tp.group, /*sequence_parallel=*/true});
}

Tensor MoELayer::forward(const Tensor& x, MoEContext& ctx) {
  const Tensor tokens = tokens_of(x, ctx);
  const int64_t num_sequences = x.dim() == 3 ? x.size(1) : 1;
  Tensor shared_out = route_forward(tokens, num_sequences, ctx, /*preprocess=*/false);
  return output_of(routed_forward(tokens, std::move(shared_out), ctx, /*preprocessed=*/false), ctx);
}

Tensor MoELayer::tokens_of(const Tensor& x, MoEContext& ctx) const {
  MOE_CHECK(x.dim() == 2 || x.dim() == 3, "MoELayer::forward: x must be [S, B, H] or [T, H], got ",
            shape_str(x.shape()));
  MOE_CHECK(x.size(-1) == config_.hidden_size, "MoELayer::forward: hidden size ", x.size(-1),
            " != --hidden-size ", config_.hidden_size);
  MOE_CHECK(x.dtype() == config_.params_dtype, "MoELayer::forward: input dtype ", x.dtype(),
            " != parameter dtype ", config_.params_dtype);
  ctx.input_shape = x.shape();
  // This rank's sequence shard (the input is one already under sequence parallelism).
  const bool shard = tp_.active() && !tp_.sequence_parallel;
  return (shard ? sequence_shard(x, tp_) : x).flatten_rows();
}

Tensor MoELayer::output_of(const Tensor& y, const MoEContext& ctx) const {
  if (!tp_.active() || tp_.sequence_parallel) return y.reshape(ctx.input_shape);
  Shape mine = ctx.input_shape;
  mine[0] = y.size(0) / (mine.size() == 3 ? mine[1] : 1);
  return sequence_gather(y.reshape(mine), tp_);
}

Tensor MoELayer::shared_forward(const Tensor& tokens, MoEContext& ctx) {
  return traced("moe.shared_expert", [&] { return shared_expert->forward(tokens, ctx.shared); });
}

Tensor MoELayer::route_forward(const Tensor& tokens, int64_t num_sequences, MoEContext& ctx,
                               bool preprocess) {
  traced("moe.route", [&] { router.forward(tokens, num_sequences, ctx.router); });
  MOE_STAGE_DONE("route");
  if (preprocess)
    traced("moe.dispatch", [&] {
      dispatcher_->dispatch_preprocess(tokens, ctx.router.probs, ctx.router.expert_ids,
                                       ctx.dispatch);
    });
  // --moe-shared-expert-overlap: the shared expert computes while the dispatch's exchange is in
  // flight (routed_forward); its output is added where it would be otherwise (the same sums).
  return shared_expert && !overlaps_shared_expert() ? shared_forward(tokens, ctx) : Tensor();
}

Tensor MoELayer::routed_forward(const Tensor& tokens, Tensor shared_out, MoEContext& ctx,
                                bool preprocessed) {
  const DispatchedTokens routed = traced("moe.dispatch", [&] {
    if (!preprocessed)
      dispatcher_->dispatch_preprocess(tokens, ctx.router.probs, ctx.router.expert_ids,
                                       ctx.dispatch);
    dispatcher_->dispatch_communicate_start(ctx.dispatch);
    if (overlaps_shared_expert()) shared_out = shared_forward(tokens, ctx);
    dispatcher_->dispatch_communicate_finish(ctx.dispatch);
    return dispatcher_->dispatch_postprocess(ctx.dispatch);
  });
  MOE_STAGE_DONE("dispatch");
  const Tensor expert_out = traced("moe.experts", [&] {
    return experts.forward(routed.x, routed.probs, routed.tokens_per_expert,
                           routed.host_tokens_per_expert, ctx.experts);
  });
  MOE_STAGE_DONE("experts");
  Tensor y = traced("moe.combine", [&] { return dispatcher_->combine(expert_out, ctx.dispatch); });
  MOE_STAGE_DONE("combine");
  if (shared_expert) {
    ops::add_(y, shared_out);
    MOE_STAGE_DONE("shared");
    // A first forward (not a recomputation, which the backward reads at once) keeps the shared
    // expert's input alone.
    if (recompute_shared_expert_ && !ctx.router.recompute) {
      const Tensor input = ctx.shared.x;
      ctx.shared = SharedExpertContext{};
      ctx.shared.x = input;
    }
  }
  return y;
}

MoEContext MoEContext::outputs() const {
  MoEContext kept;
  kept.input_shape = input_shape;
  kept.router = router.outputs();
  return kept;
}

Tensor MoELayer::backward(const Tensor& dy, MoEContext& ctx, double loss_scale) {
  const Tensor d_tokens = grads_of(dy, ctx);
  const RoutedGrads grads = routed_backward(d_tokens, ctx);
  return output_of(route_backward(grads, d_tokens, ctx, loss_scale), ctx);
}

Tensor MoELayer::grads_of(const Tensor& dy, const MoEContext& ctx) const {
  check_shape(dy, ctx.input_shape, "MoELayer::backward", "dy");
  const bool shard = tp_.active() && !tp_.sequence_parallel;
  return (shard ? sequence_shard(dy, tp_) : dy).flatten_rows().to(config_.params_dtype);
}

Tensor MoELayer::shared_backward(const Tensor& d_tokens, MoEContext& ctx) {
  if (!ctx.shared.fc1_out.defined()) {  // --recompute-modules shared_experts
    const Tensor input = ctx.shared.x;  // forward() resets the context it fills
    traced("moe.shared_expert.recompute", [&] { shared_expert->forward(input, ctx.shared); });
  }
  return traced("moe.shared_expert.bwd",
                [&] { return shared_expert->backward(d_tokens, ctx.shared); });
}

MoELayer::RoutedGrads MoELayer::routed_backward(const Tensor& d_tokens, MoEContext& ctx) {
  // --moe-shared-expert-overlap: the shared expert's backward runs while the combine's backward
  // exchange is in flight; its input gradient is added where it would be otherwise.
  RoutedGrads grads;
  const Tensor d_expert_out = traced("moe.combine.bwd", [&] {
    dispatcher_->combine_backward_start(d_tokens, ctx.dispatch);
    if (overlaps_shared_expert()) grads.shared = shared_backward(d_tokens, ctx);
    return dispatcher_->combine_backward_finish(ctx.dispatch);
  });
  MOE_STAGE_DONE("combine.bwd");
  const Experts::Grads d_experts =
      traced("moe.experts.bwd", [&] { return experts.backward(d_expert_out, ctx.experts); });
  MOE_STAGE_DONE("experts.bwd");
  const TokenDispatcher::Grads d_routed = traced("moe.dispatch.bwd", [&] {
    return dispatcher_->dispatch_backward(d_experts.x, d_experts.probs, ctx.dispatch);
  });
  MOE_STAGE_DONE("dispatch.bwd");
  grads.probs = d_routed.probs;
  grads.x = d_routed.x;
  return grads;
}

Tensor MoELayer::route_backward(const RoutedGrads& grads, const Tensor& d_tokens, MoEContext& ctx,
                                double loss_scale) {
  Tensor dx =
      traced("moe.route.bwd", [&] { return router.backward(grads.probs, ctx.router, loss_scale); });
  ops::add_(dx, grads.x);
  MOE_STAGE_DONE("route.bwd");
  if (shared_expert) {
    const Tensor d_shared =
        overlaps_shared_expert() ? grads.shared : shared_backward(d_tokens, ctx);
    ops::add_(dx, d_shared);
    MOE_STAGE_DONE("shared.bwd");
  }
  return dx;
}

std::vector<Parameter*> MoELayer::route_parameters() {
  std::vector<Parameter*> params{&router.weight};
  if (shared_expert) {
    params.push_back(&shared_expert->fc1);
    params.push_back(&shared_expert->fc2);
    if (config_.moe_shared_expert_gate) params.push_back(&shared_expert->gate);
  }
  return params;
}

std::vector<Parameter*> MoELayer::parameters() {
  // The router, the experts, the shared expert (the order of checkpoints and optimizer state).
  std::vector<Parameter*> params = route_parameters();
  params.insert(params.begin() + 1, {&experts.fc1, &experts.fc2});
  return params;
}

void MoELayer::zero_grad() {
  for (Parameter* p : parameters()) p->zero_grad();
}

}  // namespace moe::nn
