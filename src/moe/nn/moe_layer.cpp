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
  MOE_CHECK(x.dim() == 2 || x.dim() == 3, "MoELayer::forward: x must be [S, B, H] or [T, H], got ",
            shape_str(x.shape()));
  MOE_CHECK(x.size(-1) == config_.hidden_size, "MoELayer::forward: hidden size ", x.size(-1),
            " != --hidden-size ", config_.hidden_size);
  MOE_CHECK(x.dtype() == config_.params_dtype, "MoELayer::forward: input dtype ", x.dtype(),
            " != parameter dtype ", config_.params_dtype);
  ctx.input_shape = x.shape();
  const int64_t num_sequences = x.dim() == 3 ? x.size(1) : 1;
  // This rank's sequence shard (the input is one already under sequence parallelism).
  const bool shard = tp_.active() && !tp_.sequence_parallel;
  const Tensor mine = shard ? sequence_shard(x, tp_) : x;
  const Tensor tokens = mine.flatten_rows();

  traced("moe.route", [&] { router.forward(tokens, num_sequences, ctx.router); });
  MOE_STAGE_DONE("route");
  // --moe-shared-expert-overlap: the shared expert computes while the dispatch's exchange is in
  // flight; its output is added where it would be otherwise (the same sums).
  const bool overlap = shared_expert && config_.moe_shared_expert_overlap;
  const auto shared_forward = [&] {
    return traced("moe.shared_expert", [&] { return shared_expert->forward(tokens, ctx.shared); });
  };
  Tensor shared_out;
  const DispatchedTokens routed = traced("moe.dispatch", [&] {
    dispatcher_->dispatch_preprocess(tokens, ctx.router.probs, ctx.router.expert_ids, ctx.dispatch);
    dispatcher_->dispatch_communicate_start(ctx.dispatch);
    if (overlap) shared_out = shared_forward();
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
    if (!overlap) shared_out = shared_forward();
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
  return shard ? sequence_gather(y.reshape(mine.shape()), tp_) : y.reshape(ctx.input_shape);
}

MoEContext MoEContext::outputs() const {
  MoEContext kept;
  kept.input_shape = input_shape;
  kept.router = router.outputs();
  return kept;
}

Tensor MoELayer::backward(const Tensor& dy, MoEContext& ctx, double loss_scale) {
  check_shape(dy, ctx.input_shape, "MoELayer::backward", "dy");
  const bool shard = tp_.active() && !tp_.sequence_parallel;
  const Tensor d_mine = shard ? sequence_shard(dy, tp_) : dy;
  const Tensor d_tokens = d_mine.flatten_rows().to(config_.params_dtype);
  // --moe-shared-expert-overlap: the shared expert's backward runs while the combine's backward
  // exchange is in flight; its input gradient is added where it would be otherwise.
  const bool overlap = shared_expert && config_.moe_shared_expert_overlap;
  const auto shared_backward = [&] {
    if (!ctx.shared.fc1_out.defined()) {  // --recompute-modules shared_experts
      const Tensor input = ctx.shared.x;  // forward() resets the context it fills
      traced("moe.shared_expert.recompute", [&] { shared_expert->forward(input, ctx.shared); });
    }
    return traced("moe.shared_expert.bwd",
                  [&] { return shared_expert->backward(d_tokens, ctx.shared); });
  };
  Tensor d_shared;
  const Tensor d_expert_out = traced("moe.combine.bwd", [&] {
    dispatcher_->combine_backward_start(d_tokens, ctx.dispatch);
    if (overlap) d_shared = shared_backward();
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
  Tensor dx = traced("moe.route.bwd",
                     [&] { return router.backward(d_routed.probs, ctx.router, loss_scale); });
  ops::add_(dx, d_routed.x);
  MOE_STAGE_DONE("route.bwd");
  if (shared_expert) {
    if (!overlap) d_shared = shared_backward();
    ops::add_(dx, d_shared);
    MOE_STAGE_DONE("shared.bwd");
  }
  return shard ? sequence_gather(dx.reshape(d_mine.shape()), tp_) : dx.reshape(ctx.input_shape);
}

std::vector<Parameter*> MoELayer::parameters() {
  std::vector<Parameter*> params{&router.weight, &experts.fc1, &experts.fc2};
  if (shared_expert) {
    params.push_back(&shared_expert->fc1);
    params.push_back(&shared_expert->fc2);
    if (config_.moe_shared_expert_gate) params.push_back(&shared_expert->gate);
  }
  return params;
}

void MoELayer::zero_grad() {
  for (Parameter* p : parameters()) p->zero_grad();
}

}  // namespace moe::nn
