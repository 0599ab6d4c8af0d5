// The allgather token dispatcher (Megatron's MoEAllGatherTokenDispatcher): every rank of the
// ETP x EP group sees every token of the group and computes its local experts' share.
#include "moe/nn/allgather_dispatcher.h"

#include <algorithm>

#include "moe/ops/grouped_gemm.h"
#include "moe/ops/local_experts.h"

namespace moe::nn {

AllGatherDispatcher::AllGatherDispatcher(const MoEConfig& config, const MoEGroups& groups)
    : config_(config), groups_(groups) {}

int AllGatherDispatcher::group_size() const {
  return MoEGroups::size_of(groups_.tp_ep);
}

void AllGatherDispatcher::dispatch_preprocess(const Tensor& x, const Tensor& probs,
                                              const Tensor& expert_ids, DispatchContext& ctx) {
  begin_dispatch(x, probs, expert_ids, ctx, "allgather dispatch");
}

void AllGatherDispatcher::dispatch_communicate(DispatchContext& ctx) {
  const int n = group_size();
  if (n == 1) {
    ctx.comm_x = ctx.x;
    ctx.comm_probs = ctx.probs;
    ctx.combine_buffer = ctx.expert_ids;
    return;
  }
  // Every rank of the group must hold the same number of tokens (as in Megatron).
  const int64_t T = ctx.num_tokens, K = ctx.probs.size(1), H = ctx.x.size(1);
  ctx.comm_x = Tensor::empty({n * T, H}, ctx.x.dtype(), ctx.x.device());
  ctx.comm_probs = Tensor::empty({n * T, K}, ctx.probs.dtype(), ctx.x.device());
  Tensor ids = Tensor::empty({n * T, K}, DType::i32, ctx.x.device());
  groups_.tp_ep->all_gather(ctx.x, ctx.comm_x);
  groups_.tp_ep->all_gather(ctx.probs, ctx.comm_probs);
  groups_.tp_ep->all_gather(ctx.expert_ids, ids);
  ctx.combine_buffer = ids;  // gathered ids, consumed by postprocess
}

DispatchedTokens AllGatherDispatcher::dispatch_postprocess(DispatchContext& ctx) {
  const int64_t El = config_.num_local_experts();
  const int64_t first = static_cast<int64_t>(groups_.ep_rank()) * El;
  const Tensor local_ids = ops::localize_expert_ids(ctx.combine_buffer, first, El);
  ops::PermuteConfig pc;
  pc.num_experts = El;
  // FP8 GEMMs need multiples of 16 rows; the bf16 grouped GEMM may ask for whole chunks.
  pc.pad_multiple =
      std::max<int64_t>(config_.moe_router_padding_for_fp8 ? 16 : 1,
                        ops::grouped_gemm_row_multiple(config_.moe_grouped_gemm_backend,
                                                       ctx.x.device(), ctx.x.dtype(), El));
  if (config_.moe_pad_expert_input_to_capacity) {
    const int64_t T = ctx.num_tokens, K = ctx.probs.size(1);
    pc.pad_to_capacity = true;
    pc.capacity =
        ops::expert_capacity(T, K, config_.num_experts, *config_.moe_expert_capacity_factor) *
        group_size();
  }
  ctx.map = ops::make_permute_map(local_ids, pc);
  ctx.permuted = ops::permute_forward(ctx.comm_x, ctx.comm_probs, ctx.map);
  ctx.combine_buffer = Tensor();
  ctx.out = {ctx.permuted.x, ctx.permuted.probs, ctx.map.tokens_per_expert, {}};
  // Drop-and-pad: every local expert holds the padded capacity, known here, so the experts'
  // grouped GEMMs need not read the counts back.
  if (config_.moe_pad_expert_input_to_capacity)
    ctx.out.host_tokens_per_expert.assign(static_cast<size_t>(El), ctx.map.num_rows / El);
  return ctx.out;
}

void AllGatherDispatcher::combine_preprocess(const Tensor& expert_out, DispatchContext& ctx) {
  // Sum each gathered token's rows from the local experts (a partial sum over experts, and
  // over the FFN shard under ETP).
  ctx.combine_buffer = ops::unpermute_forward(expert_out, ctx.map);
}

void AllGatherDispatcher::combine_communicate(DispatchContext& ctx) {
  const int n = group_size();
  if (n == 1) return;
  Tensor y =
      Tensor::empty({ctx.num_tokens, ctx.x.size(1)}, ctx.combine_buffer.dtype(), ctx.x.device());
  groups_.tp_ep->reduce_scatter(ctx.combine_buffer, y);
  ctx.combine_buffer = y;
}

Tensor AllGatherDispatcher::combine_postprocess(DispatchContext& ctx) {
  Tensor y = ctx.combine_buffer;
  ctx.combine_buffer = Tensor();
  return y;
}

Tensor AllGatherDispatcher::combine_backward(const Tensor& dy, DispatchContext& ctx) {
  Tensor dy_gathered = dy;
  const int n = group_size();
  if (n > 1) {
    dy_gathered = Tensor::empty({n * ctx.num_tokens, dy.size(1)}, dy.dtype(), dy.device());
    groups_.tp_ep->all_gather(dy, dy_gathered);
  }
  return ops::unpermute_backward(dy_gathered, ctx.map);
}

TokenDispatcher::Grads AllGatherDispatcher::dispatch_backward(const Tensor& dx_expert,
                                                              const Tensor& dprobs_expert,
                                                              DispatchContext& ctx) {
  ops::PermuteGrads g = ops::permute_backward(dx_expert, dprobs_expert, ctx.map);
  const int n = group_size();
  if (n == 1) return {g.x, g.probs};
  // Each gathered token got gradient from the experts of every rank: sum them back to the
  // token's owner.
  Tensor dx = Tensor::empty({ctx.num_tokens, g.x.size(1)}, g.x.dtype(), g.x.device());
  Tensor dprobs = Tensor::empty({ctx.num_tokens, g.probs.size(1)}, g.probs.dtype(), g.x.device());
  groups_.tp_ep->reduce_scatter(g.x, dx);
  groups_.tp_ep->reduce_scatter(g.probs, dprobs);
  return {dx, dprobs};
}

}  // namespace moe::nn
