// CPU half of the Local backend's reduction (local_reduce.h): the same template as the kernel.
#include "moe/dist/local_reduce.h"

namespace moe::dist::detail {

bool reducible(DType dtype) {
  switch (dtype) {
    case DType::f64:
    case DType::f32:
    case DType::bf16:
    case DType::f16:
    case DType::i64:
    case DType::i32:
      return true;
    default:
      return false;
  }
}

void local_reduce_cpu(std::span<const void* const> inputs, void* out, int64_t numel, DType dtype,
                      ReduceOp op) {
  const int num_ranks = static_cast<int>(inputs.size());
  MOE_CHECK(num_ranks >= 1, "local_reduce_cpu: no inputs");
  dispatch<DType::f64, DType::f32, DType::bf16, DType::f16, DType::i64, DType::i32>(
      dtype, "reduction", [&]<class T>() {
        T* dst = static_cast<T*>(out);
        for (int64_t i = 0; i < numel; ++i) {
          dst[i] = reduce_over_ranks<T>(op, num_ranks,
                                        [&](int r) { return static_cast<const T*>(inputs[r])[i]; });
        }
      });
}

}  // namespace moe::dist::detail
