// The alltoall dispatcher's sync-free exchange (alltoall_dispatcher.h, --moe-expert-rank-
// capacity-factor): fixed slots of C rows per (source, destination) pair, so every size is
// known on the host and every index is computed on the device (ops/exchange_slots.h).
//
//   dispatch  permuted rows --send map--> [P slots of C] --EP all-to-all--> [P slots]
//             --ETP all-gather--> [Q * P slots] --received map--> rows by local expert
//   combine   the mirror image: rows by local expert --inverse map--> [Q * P slots]
//             --ETP reduce-scatter--> [P slots] --EP all-to-all--> --inverse send map-->
//             permuted rows (rows that had no slot get zeros)
// The backward of each direction runs the other direction's steps on the gradients.
#include <algorithm>
#include <cmath>
#include <vector>

#include "moe/nn/alltoall_dispatcher.h"

namespace moe::nn {
namespace {

Tensor as_rows(const Tensor& probs) {
  return probs.reshape({probs.size(0), 1});
}

// A buffer of `rows` rows shaped like `like` past its first dimension.
Tensor rows_like(const Tensor& like, int64_t rows) {
  Shape shape = like.shape();
  shape[0] = rows;
  return Tensor::empty(shape, like.dtype(), like.device());
}

}  // namespace

bool AllToAllDispatcher::uses_slots() const {
  return config_.moe_expert_rank_capacity_factor.has_value() && !single_rank() && !synchronising_;
}

TokenDispatcher::SlotUsage AllToAllDispatcher::slot_usage() const {
  return {slot_peak_rows_, slot_rows_, even_rows_};
}

void AllToAllDispatcher::reset_slot_usage() {
  if (slot_peak_rows_.defined()) slot_peak_rows_.zero_();
}

void AllToAllDispatcher::slots_preprocess(DispatchContext& ctx) {
  const int64_t T = ctx.num_tokens, K = ctx.probs.size(1);
  const int P = groups_.ep_size();
  check_equal_token_counts(T, ctx.x.device(), "--moe-expert-rank-capacity-factor");
  // The budget of a rank, T * K * F rows (Megatron's), shared evenly by the P sources that
  // send to it; rounded up so the FP8 grouped GEMM's 16-row multiples stay whole.
  const double even = static_cast<double>(T * K) / P;
  int64_t C = static_cast<int64_t>(std::ceil(even * *config_.moe_expert_rank_capacity_factor));
  // A model that drops tokens sends a destination at most its El experts' capacity each: a
  // slot of that many rows can never be short, and a larger one would carry only empty rows.
  if (config_.moe_expert_capacity_factor)
    C = std::min(
        C, config_.num_local_experts() * ops::expert_capacity(T, K, config_.num_experts,
                                                              *config_.moe_expert_capacity_factor));
  const int64_t multiple = config_.moe_router_padding_for_fp8 ? 16 : 1;
  C = (C + multiple - 1) / multiple * multiple;
  ctx.slot_rows = C;
  if (!slot_peak_rows_.defined() || slot_peak_rows_.device() != ctx.x.device())
    slot_peak_rows_ = Tensor::zeros({1}, DType::i64, ctx.x.device());
  slot_rows_ = C;
  even_rows_ = even;
  ctx.send_slots =
      ops::make_send_slots(ctx.map.tokens_per_expert, P, C, ctx.map.num_rows, slot_peak_rows_);
}

Tensor AllToAllDispatcher::slots_post(const Tensor& rows, DispatchContext& ctx) const {
  const Tensor send = ops::gather_rows(rows, ctx.send_slots.slot_to_row);
  Tensor received = rows_like(send, send.size(0));
  const std::vector<int64_t> splits(static_cast<size_t>(groups_.ep_size()), ctx.slot_rows);
  ctx.in_flight.push_back(groups_.ep->all_to_all_v_async(send, received, splits, splits));
  ctx.in_flight_buffers.push_back(send);
  return received;
}

void AllToAllDispatcher::slots_communicate_start(DispatchContext& ctx) const {
  ctx.comm_x = slots_post(ctx.permuted.x, ctx);
  ctx.comm_probs = slots_post(as_rows(ctx.permuted.probs), ctx);
  // The counts beside the rows: row d of [P, El] goes to rank d.
  const Tensor& sent = ctx.send_slots.counts;
  ctx.received_counts = rows_like(sent, sent.size(0));
  const std::vector<int64_t> splits(static_cast<size_t>(groups_.ep_size()), 1);
  ctx.in_flight.push_back(
      groups_.ep->all_to_all_v_async(sent, ctx.received_counts, splits, splits));
}

Tensor AllToAllDispatcher::slots_over_etp(const Tensor& slots) const {
  const int Q = groups_.etp_size();
  if (Q == 1) return slots;
  Tensor all = rows_like(slots, slots.size(0) * Q);
  groups_.etp->all_gather(slots, all);
  return all;
}

void AllToAllDispatcher::slots_communicate_finish(DispatchContext& ctx) const {
  ctx.wait_in_flight();
  ctx.comm_x = slots_over_etp(ctx.comm_x);
  ctx.comm_probs = slots_over_etp(ctx.comm_probs);
  ctx.received_counts = slots_over_etp(ctx.received_counts);
  ctx.received_slots = ops::make_received_slots(ctx.received_counts, ctx.slot_rows);
}

Tensor AllToAllDispatcher::slots_grouped(const Tensor& received, const DispatchContext& ctx) const {
  return ops::gather_rows(received, ctx.received_slots.row_to_received);
}

Tensor AllToAllDispatcher::slots_return(const Tensor& expert_rows,
                                        const DispatchContext& ctx) const {
  Tensor slots = ops::gather_rows(expert_rows, ctx.received_slots.received_to_row);
  if (groups_.etp_size() > 1) {  // the ETP ranks' partial sums, each keeping its own slots
    Tensor mine = rows_like(slots, slots.size(0) / groups_.etp_size());
    groups_.etp->reduce_scatter(slots, mine);
    slots = mine;
  }
  Tensor back = rows_like(slots, slots.size(0));
  const std::vector<int64_t> splits(static_cast<size_t>(groups_.ep_size()), ctx.slot_rows);
  groups_.ep->all_to_all_v(slots, back, splits, splits);
  return ops::gather_rows(back, ctx.send_slots.row_to_slot);
}

}  // namespace moe::nn
