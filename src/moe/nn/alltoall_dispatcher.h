// The alltoall dispatcher: see token_dispatcher.h. One host synchronisation per forward (the
// per-expert counts, to size the all-to-all), as in Megatron; the host counts are then handed
// to the grouped GEMMs, which need no further sync. With drop-and-pad
// (--moe-pad-expert-input-to-capacity) every count is the padded capacity, known on every
// rank: no exchange of counts and no sync (checked once, at the first dispatch, that the
// ranks route as many tokens).
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

 private:
  bool single_rank() const { return groups_.ep_size() * groups_.etp_size() == 1; }
  // Drop-and-pad: that every rank of the ETP x EP group routes `num_tokens` tokens (so pads to
  // the same capacity), checked at the first dispatch only (a collective there). Throws naming
  // the ranks' counts.
  void check_equal_token_counts(int64_t num_tokens, Device device);
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
  int64_t verified_tokens_ = -1;  // the first dispatch's token count, once checked
  // The last tokens_per_expert uploaded, and its host values (reused under drop-and-pad).
  Tensor uploaded_tokens_per_expert_;
  std::vector<int64_t> uploaded_counts_;
};

}  // namespace moe::nn
