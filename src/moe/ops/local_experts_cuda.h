// Internal: CUDA launcher of localize_expert_ids (local_experts_cuda.cu).
#pragma once

#include "moe/core/tensor.h"

namespace moe::ops::detail {
void localize_expert_ids_cuda(const Tensor& ids, int64_t first, int64_t count, Tensor& out);
}
