#include "moe/nn/model_groups.h"

namespace moe::nn {

ModelGroups model_groups_of(const dist::ParallelState& state, bool sequence_parallel,
                            ContextParallel::Exchange cp_exchange) {
  ModelGroups groups;
  if (state.tp_size() > 1) groups.tp.group = state.tp();
  groups.tp.sequence_parallel = sequence_parallel && state.tp_size() > 1;
  if (state.cp_size() > 1) groups.cp.group = state.cp();
  groups.cp.exchange = cp_exchange;
  groups.moe = moe_groups_of(state);
  return groups;
}

}  // namespace moe::nn
