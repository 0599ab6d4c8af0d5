// The allgather dispatcher: see token_dispatcher.h.
#pragma once

#include "moe/nn/token_dispatcher.h"

namespace moe::nn {

class AllGatherDispatcher final : public TokenDispatcher {
 public:
  AllGatherDispatcher(const MoEConfig& config, const MoEGroups& groups);
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

 private:
  int group_size() const;
  MoEConfig config_;
  MoEGroups groups_;
};

}  // namespace moe::nn
