#include "moe/nn/moe_groups.h"

namespace moe::nn {

MoEGroups moe_groups_of(const dist::ParallelState& state) {
  const auto several = [](const std::shared_ptr<dist::ProcessGroup>& g) {
    return g && g->size() > 1 ? g : nullptr;
  };
  MoEGroups groups;
  groups.ep = several(state.ep());
  groups.etp = several(state.etp());
  groups.tp_ep = several(state.tp_ep());
  groups.tp_cp = several(state.tp_cp());
  groups.tp_dp_cp = several(state.tp_dp_cp());
  groups.dp_size = state.dp_size();
  return groups;
}

}  // namespace moe::nn
