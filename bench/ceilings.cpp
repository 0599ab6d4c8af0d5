#include "ceilings.h"

#include "moe/core/rng.h"
#include "moe/core/tensor.h"
#include "moe/ops/gemm.h"

namespace moe::bench {

Ceilings measure_ceilings(Device device) {
  Ceilings c;
  const bool gpu = device.is_cuda();
  const int64_t n = gpu ? 8192 : 512;
  const DType dt = gpu ? DType::bf16 : DType::f32;
  // Random data: a product of zeros runs faster than real data will.
  Tensor a = Tensor::empty({n, n}, dt, device), b = Tensor::empty({n, n}, dt, device);
  fill_normal(a, 1, 0, 1);
  fill_normal(b, 2, 0, 1);
  Tensor out = Tensor::empty({n, n}, dt, device);
  const double ms = median_ms(device, 3, gpu ? 20 : 3, [&] { ops::gemm(a, false, b, true, out); });
  c.gemm_tflops = 2.0 * n * n * n / (ms * 1e-3) / 1e12;

  const int64_t bytes = gpu ? (int64_t{1} << 30) : (int64_t{64} << 20);
  Tensor src = Tensor::empty({bytes}, DType::u8, device), dst = Tensor::empty({bytes}, DType::u8, device);
  src.fill_(1);
  const double copy_ms = median_ms(device, 3, gpu ? 20 : 5, [&] { dst.copy_(src); });
  c.copy_gb_per_s = 2.0 * static_cast<double>(bytes) / (copy_ms * 1e-3) / 1e9;
  return c;
}

}  // namespace moe::bench
