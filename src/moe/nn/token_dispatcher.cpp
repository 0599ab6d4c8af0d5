#include "moe/nn/token_dispatcher.h"

#include "moe/nn/allgather_dispatcher.h"
#include "moe/nn/alltoall_dispatcher.h"

namespace moe::nn {

void begin_dispatch(const Tensor& x, const Tensor& probs, const Tensor& expert_ids,
                    DispatchContext& ctx, const char* op) {
  check_dim(x, 2, op, "x");
  check_dim(probs, 2, op, "probs");
  check_shape(expert_ids, probs.shape(), op, "expert_ids");
  MOE_CHECK(probs.size(0) == x.size(0), op, ": ", x.size(0), " tokens but probs for ",
            probs.size(0));
  ctx = DispatchContext{};
  ctx.x = x;
  ctx.probs = probs;  // router dtype: f32, or f64 for the CPU gradient checks
  ctx.expert_ids = expert_ids;
  ctx.num_tokens = x.size(0);
}

std::unique_ptr<TokenDispatcher> make_token_dispatcher(const MoEConfig& config,
                                                       const MoEGroups& groups) {
  MOE_CHECK(groups.ep_size() == config.expert_model_parallel_size,
            "--expert-model-parallel-size ", config.expert_model_parallel_size,
            " but the EP group has ", groups.ep_size(), " ranks");
  MOE_CHECK(groups.etp_size() == config.expert_tensor_parallel_size,
            "--expert-tensor-parallel-size ", config.expert_tensor_parallel_size,
            " but the ETP group has ", groups.etp_size(), " ranks");
  MOE_CHECK(MoEGroups::size_of(groups.tp_ep) == groups.ep_size() * groups.etp_size(),
            "the ETP x EP group has ", MoEGroups::size_of(groups.tp_ep), " ranks, expected ",
            groups.ep_size() * groups.etp_size());
  switch (config.dispatcher()) {
    case DispatcherType::allgather: return std::make_unique<AllGatherDispatcher>(config, groups);
    case DispatcherType::alltoall: return std::make_unique<AllToAllDispatcher>(config, groups);
  }
  MOE_FAIL("unknown dispatcher");
}

}  // namespace moe::nn
