#include "moe/ops/local_experts.h"

#include "moe/ops/local_experts_cuda.h"

namespace moe::ops {

Tensor localize_expert_ids(const Tensor& expert_ids, int64_t first_expert, int64_t num_local_experts) {
  check_dtype(expert_ids, DType::i32, "localize_expert_ids", "expert_ids");
  MOE_CHECK(first_expert >= 0 && num_local_experts >= 0,
            "localize_expert_ids: bad expert range start ", first_expert, " count ",
            num_local_experts);
  Tensor out = Tensor::empty(expert_ids.shape(), DType::i32, expert_ids.device());
  if (expert_ids.is_cuda()) {
    MOE_CUDA_ONLY(detail::localize_expert_ids_cuda(expert_ids, first_expert, num_local_experts, out);
                  return out;)
  }
  const int32_t* in = expert_ids.data<int32_t>();
  int32_t* o = out.data<int32_t>();
  for (int64_t i = 0, n = expert_ids.numel(); i < n; ++i) {
    const int64_t local = in[i] - first_expert;
    o[i] = (in[i] >= 0 && local >= 0 && local < num_local_experts) ? static_cast<int32_t>(local) : -1;
  }
  return out;
}

}  // namespace moe::ops
