// RMSNorm as a module: a weight Parameter [H] (initialised to ones) around ops::rmsnorm_*.
//   y = x * rstd * w,  rstd = 1 / sqrt(mean_h x^2 + eps)     (over the last dim of x)
// Used for the layers' input / post-attention norms, the final norm, and Qwen3's QK-norm (over
// head_dim of each head: x [..., heads, head_dim], weight [head_dim]).
// Gradient rule: backward accumulates into weight.grad (lazily written after zero_grad, see
// parameter.h) and writes dL/dx.
#pragma once

#include <string>

#include "moe/nn/parameter.h"

namespace moe::nn {

struct RMSNormContext {
  Tensor x;     // the input
  Tensor rstd;  // [rows] saved by the op
};

class RMSNorm {
 public:
  RMSNorm() = default;
  // weight [size] of `dtype` on `device`, named `name` (e.g. "model.norm.weight").
  RMSNorm(std::string name, int64_t size, double eps, DType dtype, Device device);

  // x [..., size] -> y like x.
  Tensor forward(const Tensor& x, RMSNormContext& ctx) const;
  // dy like x -> dx like x; weight.grad (+)= sum_rows dy * xhat.
  Tensor backward(const Tensor& dy, RMSNormContext& ctx);

  Parameter weight;
  double eps = 1e-5;
};

}  // namespace moe::nn
