// Restricting a routing to the experts one rank holds (the allgather dispatcher keeps the
// slots of its local experts): ids_local[t, j] = ids[t, j] - first_expert when
// first_expert <= ids[t, j] < first_expert + num_local_experts, else -1 (a slot another rank
// serves, which the permutation then skips). ids are i32 [T, K]; negative ids stay -1.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::ops {

Tensor localize_expert_ids(const Tensor& expert_ids, int64_t first_expert, int64_t num_local_experts);

}  // namespace moe::ops
