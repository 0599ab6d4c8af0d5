// The alltoall token dispatcher (Megatron's MoEAlltoAllTokenDispatcher), with expert tensor
// parallelism. Ranks: p = EP rank of P, q = ETP rank of Q; the ETP x EP group orders its
// ranks g = q + Q * p (ETP fastest, docs/design.md). After the exchange a rank holds, for each of
// its local experts le, rows from every (ETP peer q', EP source r), received as chunks ordered
// [q'][r][le] and reordered to [le][q'][r] so each expert's rows are contiguous.
#include "moe/nn/alltoall_dispatcher.h"

#include <algorithm>
#include <numeric>

#include "moe/ops/grouped_gemm.h"

namespace moe::nn {
namespace {

Tensor as_rows(const Tensor& probs) {
  return probs.reshape({probs.size(0), 1});
}

}  // namespace

AllToAllDispatcher::AllToAllDispatcher(const MoEConfig& config, const MoEGroups& groups)
    : config_(config), groups_(groups) {}

void AllToAllDispatcher::check_equal_token_counts(int64_t num_tokens, Device device,
                                                  const char* flag) {
  if (verified_tokens_ == num_tokens) return;
  // Each rank's capacity (or slot) follows from its own token count: they must agree (every
  // micro-batch of a run has the same shape on every rank). Checked at the first dispatch, which
  // every rank of the group reaches together, and again when the shape changes (evaluation
  // with another micro-batch shape: again every rank at once).
  const int n = groups_.tp_ep->size();
  const std::vector<int64_t> counts =
      dist::all_gather_values(*groups_.tp_ep, std::vector<int64_t>{num_tokens}, device);
  for (int r = 0; r < n; ++r)
    MOE_CHECK(counts[static_cast<size_t>(r)] == num_tokens, flag,
              ": the ranks of an expert group must route the same number of tokens (each sizes its "
              "exchange from its own count), but this rank routes ",
              num_tokens, " and rank ", r, " of the group ", counts[static_cast<size_t>(r)]);
  verified_tokens_ = num_tokens;
}

int64_t AllToAllDispatcher::sent_rows(const DispatchContext& ctx) const {
  return std::accumulate(ctx.input_splits.begin(), ctx.input_splits.end(), int64_t{0});
}

void AllToAllDispatcher::dispatch_preprocess(const Tensor& x, const Tensor& probs,
                                             const Tensor& expert_ids, DispatchContext& ctx) {
  begin_dispatch(x, probs, expert_ids, ctx, "alltoall dispatch");
  const int64_t T = ctx.num_tokens, K = probs.size(1), E = config_.num_experts;

  // Permute 1: rows sorted by global expert, so every destination's rows are contiguous.
  ops::PermuteConfig pc;
  pc.num_experts = E;
  // FP8 GEMMs need multiples of 16 rows. On one rank the bf16 grouped GEMM may also ask for
  // whole chunks; across ranks that padding would be paid once per source rank, so not there.
  pc.pad_multiple = config_.moe_router_padding_for_fp8 ? 16 : 1;
  if (single_rank())
    pc.pad_multiple = std::max(
        pc.pad_multiple,
        ops::grouped_gemm_row_multiple(config_.moe_grouped_gemm_backend, x.device(), x.dtype(), E));
  if (config_.moe_pad_expert_input_to_capacity) {
    pc.pad_to_capacity = true;
    pc.capacity = ops::expert_capacity(T, K, E, *config_.moe_expert_capacity_factor);
  }
  ctx.map = ops::make_permute_map(expert_ids, pc);
  ctx.permuted = ops::permute_forward(x, ctx.probs, ctx.map);
  if (single_rank()) return;
  if (uses_slots()) {
    slots_preprocess(ctx);
    return;
  }

  const int P = groups_.ep_size(), Q = groups_.etp_size(), p = groups_.ep_rank(),
            q = groups_.etp_rank();
  const int64_t El = config_.num_local_experts();
  // Rows of every rank of the ETP x EP group per expert. Drop-and-pad
  // (--moe-pad-expert-input-to-capacity) gives every expert of every rank the same padded
  // capacity, known here: no exchange, no host sync (Megatron's drop-and-pad path). Otherwise
  // the counts are all-gathered and read on the host: the one sync of this dispatcher.
  std::vector<int64_t> counts;
  if (config_.moe_pad_expert_input_to_capacity) {
    check_equal_token_counts(T, x.device(), "--moe-pad-expert-input-to-capacity");
    counts.assign(static_cast<size_t>(P) * Q * E, ctx.map.num_rows / E);
  } else {
    Tensor all_counts = Tensor::empty({static_cast<int64_t>(P) * Q, E}, DType::i64, x.device());
    groups_.tp_ep->all_gather(ctx.map.tokens_per_expert.reshape({1, E}), all_counts);
    counts = all_counts.to_vector<int64_t>();
  }
  auto count = [&](int g, int64_t expert) { return counts[static_cast<size_t>(g * E + expert)]; };

  const int me = q + Q * p;
  ctx.input_splits.assign(P, 0);
  ctx.output_splits.assign(P, 0);
  for (int r = 0; r < P; ++r)
    for (int64_t le = 0; le < El; ++le) {
      ctx.input_splits[r] += count(me, r * El + le);
      ctx.output_splits[r] += count(q + Q * r, p * El + le);
    }
  ctx.etp_gather_counts.assign(Q, 0);
  ctx.chunk_sizes.clear();
  for (int qq = 0; qq < Q; ++qq)
    for (int r = 0; r < P; ++r)
      for (int64_t le = 0; le < El; ++le) {
        const int64_t n = count(qq + Q * r, p * El + le);
        ctx.etp_gather_counts[qq] += n;
        ctx.chunk_sizes.push_back(n);
      }
  // Permute 2: chunk (qq, r, le) at index (qq * P + r) * El + le moves to [le][qq][r].
  const int64_t chunks = static_cast<int64_t>(ctx.chunk_sizes.size());
  ctx.chunk_order.clear();
  ctx.inverse_order.assign(chunks, 0);
  ctx.sorted_chunk_sizes.clear();
  std::vector<int64_t> per_expert(El, 0);
  for (int64_t le = 0; le < El; ++le)
    for (int qq = 0; qq < Q; ++qq)
      for (int r = 0; r < P; ++r) {
        const int64_t source = (static_cast<int64_t>(qq) * P + r) * El + le;
        ctx.inverse_order[source] = static_cast<int64_t>(ctx.chunk_order.size());
        ctx.chunk_order.push_back(source);
        ctx.sorted_chunk_sizes.push_back(ctx.chunk_sizes[source]);
        per_expert[le] += ctx.chunk_sizes[source];
      }
  // inverse_order above maps source -> position; sort_chunks wants, for each output chunk,
  // the input chunk: the inverse permutation of chunk_order is exactly that map read as
  // "output chunk `source` takes input chunk inverse_order[source]".
  ctx.out.host_tokens_per_expert = per_expert;
}

Tensor AllToAllDispatcher::exchange_forward(const Tensor& rows, DispatchContext& ctx) const {
  const Tensor received = exchange_forward_start(rows, ctx);
  ctx.wait_in_flight();
  return exchange_forward_finish(received, ctx);
}

Tensor AllToAllDispatcher::exchange_forward_start(const Tensor& rows, DispatchContext& ctx) const {
  const int64_t received =
      std::accumulate(ctx.output_splits.begin(), ctx.output_splits.end(), int64_t{0});
  Shape shape = rows.shape();
  shape[0] = received;
  Tensor out = Tensor::empty(shape, rows.dtype(), rows.device());
  if (groups_.ep_size() > 1) {
    ctx.in_flight.push_back(groups_.ep->all_to_all_v_async(rows.rows(0, sent_rows(ctx)), out,
                                                           ctx.input_splits, ctx.output_splits));
  } else {
    out.copy_(rows.rows(0, received));
  }
  return out;
}

Tensor AllToAllDispatcher::exchange_forward_finish(const Tensor& received,
                                                   const DispatchContext& ctx) const {
  if (groups_.etp_size() == 1) return received;
  Shape shape = received.shape();
  shape[0] =
      std::accumulate(ctx.etp_gather_counts.begin(), ctx.etp_gather_counts.end(), int64_t{0});
  Tensor gathered = Tensor::empty(shape, received.dtype(), received.device());
  groups_.etp->all_gather_v(received, gathered, ctx.etp_gather_counts);
  return gathered;
}

Tensor AllToAllDispatcher::exchange_backward(const Tensor& rows, const DispatchContext& ctx,
                                             int64_t total_rows) const {
  Tensor mine = rows;
  Shape shape = rows.shape();
  if (groups_.etp_size() > 1) {
    shape[0] = ctx.etp_gather_counts[static_cast<size_t>(groups_.etp_rank())];
    mine = Tensor::empty(shape, rows.dtype(), rows.device());
    groups_.etp->reduce_scatter_v(rows, mine, ctx.etp_gather_counts);
  }
  shape[0] = total_rows;
  Tensor out = Tensor::zeros(shape, rows.dtype(), rows.device());
  Tensor sent = out.rows(0, sent_rows(ctx));
  if (groups_.ep_size() > 1) {
    groups_.ep->all_to_all_v(mine, sent, ctx.output_splits, ctx.input_splits);
  } else {
    sent.copy_(mine);
  }
  return out;
}

void AllToAllDispatcher::dispatch_communicate(DispatchContext& ctx) {
  if (single_rank()) return;
  if (ctx.slot_rows > 0) {
    slots_communicate_start(ctx);
    slots_communicate_finish(ctx);
    return;
  }
  ctx.comm_x = exchange_forward(ctx.permuted.x, ctx);
  ctx.comm_probs = exchange_forward(as_rows(ctx.permuted.probs), ctx);
}

void AllToAllDispatcher::dispatch_communicate_start(DispatchContext& ctx) {
  if (single_rank()) return;
  if (ctx.slot_rows > 0) return slots_communicate_start(ctx);
  // Both rows' all-to-alls posted; the sent buffers stay alive in ctx.permuted.
  ctx.comm_x = exchange_forward_start(ctx.permuted.x, ctx);
  ctx.comm_probs = exchange_forward_start(as_rows(ctx.permuted.probs), ctx);
}

void AllToAllDispatcher::dispatch_communicate_finish(DispatchContext& ctx) {
  if (single_rank()) return;
  if (ctx.slot_rows > 0) return slots_communicate_finish(ctx);
  ctx.wait_in_flight();
  ctx.comm_x = exchange_forward_finish(ctx.comm_x, ctx);
  ctx.comm_probs = exchange_forward_finish(ctx.comm_probs, ctx);
}

DispatchedTokens AllToAllDispatcher::dispatch_postprocess(DispatchContext& ctx) {
  if (single_rank()) {
    ctx.out = {ctx.permuted.x, ctx.permuted.probs, ctx.map.tokens_per_expert, {}};
    // Drop-and-pad: every expert holds the padded capacity, known here, so the experts' grouped
    // GEMMs need not read the counts back.
    if (config_.moe_pad_expert_input_to_capacity)
      ctx.out.host_tokens_per_expert.assign(static_cast<size_t>(config_.num_experts),
                                            ctx.map.num_rows / config_.num_experts);
    return ctx.out;
  }
  if (ctx.slot_rows > 0) {  // the counts stay on the device
    ctx.out.x = slots_grouped(ctx.comm_x, ctx);
    const Tensor probs = slots_grouped(ctx.comm_probs, ctx);
    ctx.out.probs = probs.reshape({probs.size(0)});
    ctx.out.tokens_per_expert = ctx.received_slots.tokens_per_expert;
    ctx.out.host_tokens_per_expert.clear();
    ctx.comm_x = ctx.comm_probs = Tensor();
    return ctx.out;
  }
  ctx.out.x = ops::sort_chunks(ctx.comm_x, ctx.chunk_sizes, ctx.chunk_order);
  Tensor probs = ops::sort_chunks(ctx.comm_probs, ctx.chunk_sizes, ctx.chunk_order);
  ctx.out.probs = probs.reshape({probs.size(0)});
  const auto& host = ctx.out.host_tokens_per_expert;
  // Drop-and-pad's counts are the same every time: uploaded once (an upload waits for the
  // stream), not per micro-batch.
  if (!config_.moe_pad_expert_input_to_capacity || host != uploaded_counts_ ||
      !uploaded_tokens_per_expert_.defined() ||
      uploaded_tokens_per_expert_.device() != ctx.x.device()) {
    uploaded_tokens_per_expert_ =
        Tensor::from_vector<int64_t>(host, {static_cast<int64_t>(host.size())}, ctx.x.device());
    uploaded_counts_ = host;
  }
  ctx.out.tokens_per_expert = uploaded_tokens_per_expert_;
  ctx.comm_x = Tensor();
  ctx.comm_probs = Tensor();
  return ctx.out;
}

void AllToAllDispatcher::combine_preprocess(const Tensor& expert_out, DispatchContext& ctx) {
  if (single_rank() || ctx.slot_rows > 0) {  // the slots' map runs in combine_communicate
    ctx.combine_buffer = expert_out;
    return;
  }
  ctx.combine_buffer = ops::sort_chunks(expert_out, ctx.sorted_chunk_sizes, ctx.inverse_order);
}

void AllToAllDispatcher::combine_communicate(DispatchContext& ctx) {
  if (single_rank()) return;
  ctx.combine_buffer = ctx.slot_rows > 0
                           ? slots_return(ctx.combine_buffer, ctx)
                           : exchange_backward(ctx.combine_buffer, ctx, ctx.map.num_rows);
}

Tensor AllToAllDispatcher::combine_postprocess(DispatchContext& ctx) {
  Tensor y = ops::unpermute_forward(ctx.combine_buffer, ctx.map);
  ctx.combine_buffer = Tensor();
  return y;
}

Tensor AllToAllDispatcher::combine_backward(const Tensor& dy, DispatchContext& ctx) {
  combine_backward_start(dy, ctx);
  return combine_backward_finish(ctx);
}

void AllToAllDispatcher::combine_backward_start(const Tensor& dy, DispatchContext& ctx) {
  ctx.combine_buffer = ops::unpermute_backward(dy, ctx.map);  // sent: kept until finish
  if (single_rank())
    ctx.pending_grad = ctx.combine_buffer;
  else if (ctx.slot_rows > 0)
    ctx.pending_grad = slots_post(ctx.combine_buffer, ctx);
  else
    ctx.pending_grad = exchange_forward_start(ctx.combine_buffer, ctx);
}

Tensor AllToAllDispatcher::combine_backward_finish(DispatchContext& ctx) {
  ctx.wait_in_flight();
  Tensor d = std::move(ctx.pending_grad);
  ctx.pending_grad = ctx.combine_buffer = Tensor();
  if (single_rank()) return d;
  if (ctx.slot_rows > 0) return slots_grouped(slots_over_etp(d), ctx);
  return ops::sort_chunks(exchange_forward_finish(d, ctx), ctx.chunk_sizes, ctx.chunk_order);
}

TokenDispatcher::Grads AllToAllDispatcher::dispatch_backward(const Tensor& dx_expert,
                                                             const Tensor& dprobs_expert,
                                                             DispatchContext& ctx) {
  Tensor dx_rows = dx_expert, dprobs_rows = dprobs_expert;
  if (ctx.slot_rows > 0) {
    dx_rows = slots_return(dx_expert, ctx);
    dprobs_rows = slots_return(as_rows(dprobs_expert), ctx);
    dprobs_rows = dprobs_rows.reshape({dprobs_rows.size(0)});
  } else if (!single_rank()) {
    dx_rows =
        exchange_backward(ops::sort_chunks(dx_expert, ctx.sorted_chunk_sizes, ctx.inverse_order),
                          ctx, ctx.map.num_rows);
    Tensor p = exchange_backward(
        ops::sort_chunks(as_rows(dprobs_expert), ctx.sorted_chunk_sizes, ctx.inverse_order), ctx,
        ctx.map.num_rows);
    dprobs_rows = p.reshape({p.size(0)});
  }
  ops::PermuteGrads g = ops::permute_backward(dx_rows, dprobs_rows, ctx.map);
  return {g.x, g.probs};
}

}  // namespace moe::nn
