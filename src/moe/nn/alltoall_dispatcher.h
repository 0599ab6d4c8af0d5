// The alltoall dispatcher: see token_dispatcher.h. One host synchronisation per forward (the
// per-expert counts, to size the all-to-all), as in Megatron; the host counts are then handed
// to the grouped GEMMs, which need no further sync. With drop-and-pad
// (--moe-pad-expert-input-to-capacity) every count is the padded capacity, known on every
// rank: no exchange of counts and no sync (checked once, at the first dispatch, that the
// ranks route as many tokens).
//
// Sync-free mode (--moe-expert-rank-capacity-factor F, Megatron's flag; its HybridEP budget
// made an all-to-all of fixed slots, since NCCL's host API needs the sizes on the host): each
// (source, destination) pair of the EP exchange moves a slot of C = ceil(T * K * F / P) rows
// (rounded up to the FP8 padding when on), the per-(destination, local expert) counts beside
// it as an [P, El] all-to-all; the device turns the received slots into rows grouped by local
// expert (ops/exchange_slots.h). Nothing is read on the host: the experts' grouped GEMMs take
// the device counts (the cutlass backend reads them there; the others read them back). The
// rows are those the synchronising exchange delivers, in the same order, followed by empty
// rows, so the layer computes the same values. A destination routed more than C rows keeps
// its first C (the rest contribute nothing, forward and backward); the dispatcher records the
// peak on the device (slot_usage) and the trainer, at the end of a step, redoes the step with
// the synchronising exchange when any rank overflowed, so the result never depends on the
// slots. A model that drops tokens (--moe-expert-capacity-factor) sends a destination at most
// El x capacity rows: C is capped there, and a factor at least the capacity factor never
// overflows. The exchange moves P * C rows per rank whatever the routing: F above the
// routing's peak costs bandwidth.
#pragma once

#include <vector>

#include "moe/nn/token_dispatcher.h"

namespace moe::nn {

class AllToAllDispatcher final : public TokenDispatcher {
 public:
  AllToAllDispatcher(const MoEConfig& config, const MoEGroups& groups);
  void dispatch_preprocess(const Tensor& x, const Tensor& probs, const Tensor& expert_ids,
                           DispatchContext& ctx) override;
  void dispatch_communicate(DispatchContext& ctx) override;
  DispatchedTokens dispatch_postprocess(DispatchContext& ctx) override;
  void combine_preprocess(const Tensor& expert_out, DispatchContext& ctx) override;
  void combine_communicate(DispatchContext& ctx) override;
  Tensor combine_postprocess(DispatchContext& ctx) override;
  Tensor combine_backward(const Tensor& dy, DispatchContext& ctx) override;
  Grads dispatch_backward(const Tensor& dx_expert, const Tensor& dprobs_expert,
                          DispatchContext& ctx) override;
  // The EP all-to-alls posted in start(), waited for (then the ETP gather) in finish().
  void dispatch_communicate_start(DispatchContext& ctx) override;
  void dispatch_communicate_finish(DispatchContext& ctx) override;
  void combine_backward_start(const Tensor& dy, DispatchContext& ctx) override;
  Tensor combine_backward_finish(DispatchContext& ctx) override;
  SlotUsage slot_usage() const override;
  void reset_slot_usage() override;
  void set_synchronising(bool on) override { synchronising_ = on; }

 private:
  bool single_rank() const { return groups_.ep_size() * groups_.etp_size() == 1; }
  // Drop-and-pad and the sync-free slots: that every rank of the ETP x EP group routes
  // `num_tokens` tokens (so pads to the same capacity, or sizes the same slots), checked at the
  // first dispatch and whenever the count changes (a collective there; every micro-batch of a
  // run has one shape on every rank). Throws naming the ranks' counts and `flag`.
  void check_equal_token_counts(int64_t num_tokens, Device device, const char* flag);
  // The sync-free exchange (alltoall_dispatcher_slots.cpp); a forward records in ctx.slot_rows
  // whether it used it, and combine and backward follow the record.
  bool uses_slots() const;
  // The slots' size and maps for this forward (from dispatch_preprocess).
  void slots_preprocess(DispatchContext& ctx);
  // Permuted rows [R, ...] -> their send slots, whose EP all-to-all is posted (the handle in
  // ctx.in_flight, the sent buffer kept in ctx.in_flight_buffers); returns the receive buffer.
  Tensor slots_post(const Tensor& rows, DispatchContext& ctx) const;
  // The dispatch's exchange: x, probs and the counts posted; then, once complete, the ETP
  // all-gather and the received slots' map.
  void slots_communicate_start(DispatchContext& ctx) const;
  void slots_communicate_finish(DispatchContext& ctx) const;
  // Under ETP: every ETP rank computes a slice of the same experts' outputs for all their rows,
  // so each gathers its ETP peers' received slots (sources s = q * P + r, as the counts do).
  Tensor slots_over_etp(const Tensor& slots) const;
  // A received (and ETP-gathered) slot buffer -> rows grouped by local expert.
  Tensor slots_grouped(const Tensor& received, const DispatchContext& ctx) const;
  // Rows grouped by local expert -> this rank's permuted rows [R, ...] (the combine and the
  // backward of the dispatch): ETP reduce-scatter and EP all-to-all of the slots, then the map.
  Tensor slots_return(const Tensor& expert_rows, const DispatchContext& ctx) const;
  // Rows of a permute-1 buffer actually exchanged (the rest is allocation slack).
  int64_t sent_rows(const DispatchContext& ctx) const;
  // EP all-to-all then ETP all-gather-v, of rows laid out like permute 1's output.
  Tensor exchange_forward(const Tensor& rows, DispatchContext& ctx) const;
  // Its halves: the EP all-to-all posted (its receive buffer returned, the handle added to
  // ctx.in_flight), and the ETP all-gather-v of what it received once it has completed.
  Tensor exchange_forward_start(const Tensor& rows, DispatchContext& ctx) const;
  Tensor exchange_forward_finish(const Tensor& received, const DispatchContext& ctx) const;
  // ETP reduce-scatter-v then EP all-to-all back, returning a permute-1-shaped buffer of
  // `total_rows` rows (zero past the exchanged ones).
  Tensor exchange_backward(const Tensor& rows, const DispatchContext& ctx,
                           int64_t total_rows) const;

  MoEConfig config_;
  MoEGroups groups_;
  int64_t verified_tokens_ = -1;  // the token count checked equal across the group
  bool synchronising_ = false;    // set_synchronising
  // The sync-free exchange's usage since reset_slot_usage: the peak rows routed to one
  // destination ([1] i64, max-accumulated on the device), the slot rows and the even share.
  Tensor slot_peak_rows_;
  int64_t slot_rows_ = 0;
  double even_rows_ = 0.0;
  // The last tokens_per_expert uploaded, and its host values (reused under drop-and-pad).
  Tensor uploaded_tokens_per_expert_;
  std::vector<int64_t> uploaded_counts_;
};

}  // namespace moe::nn
