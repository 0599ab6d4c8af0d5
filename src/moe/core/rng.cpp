#include "moe/core/rng.h"

#include "moe/core/tensor.h"
#include "moe/core/tensor_kernels.h"

namespace moe {

void fill_uniform(Tensor& t, uint64_t seed, double lo, double hi, uint64_t offset) {
  MOE_CHECK(is_floating(t.dtype()), "fill_uniform: needs a floating tensor, got ", t.dtype());
  if (t.is_cuda()) {
    MOE_CUDA_ONLY(
        detail::fill_uniform_cuda(t, seed, static_cast<float>(lo), static_cast<float>(hi), offset);
        return;)
  }
  dispatch<DType::f64, DType::f32, DType::bf16, DType::f16, DType::fp8_e4m3, DType::fp8_e5m2>(
      t.dtype(), "fill_uniform", [&]<class T>() {
        T* p = t.data<T>();
        for (int64_t i = 0, n = t.numel(); i < n; ++i)
          p[i] = T(philox_uniform(seed, offset + static_cast<uint64_t>(i), static_cast<float>(lo),
                                  static_cast<float>(hi)));
      });
}

void fill_normal(Tensor& t, uint64_t seed, double mean, double stddev, uint64_t offset) {
  MOE_CHECK(is_floating(t.dtype()), "fill_normal: needs a floating tensor, got ", t.dtype());
  if (t.is_cuda()) {
    MOE_CUDA_ONLY(detail::fill_normal_cuda(t, seed, mean, stddev, offset); return;)
  }
  dispatch<DType::f64, DType::f32, DType::bf16, DType::f16, DType::fp8_e4m3, DType::fp8_e5m2>(
      t.dtype(), "fill_normal", [&]<class T>() {
        T* p = t.data<T>();
        for (int64_t i = 0, n = t.numel(); i < n; ++i) {
          const double v = mean + stddev * philox_normal(seed, offset + static_cast<uint64_t>(i));
          if constexpr (std::is_same_v<T, double>) p[i] = v;
          else p[i] = T(static_cast<float>(v));
        }
      });
}

}  // namespace moe
