// The optimizer's elementwise math: one AdamW step over a tensor, and the squared L2 norm used
// for gradient clipping and NaN/Inf detection.
//
// adamw_step (Loshchilov & Hutter's decoupled weight decay; Megatron's --optimizer adam, which
// Apex / Transformer Engine run in AdamW mode), step t >= 1:
//   g     = grad_scale * grad                     (grad_scale: the clipping coefficient)
//   m     = beta1 m + (1 - beta1) g
//   v     = beta2 v + (1 - beta2) g^2
//   m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
//   p     = p - lr (m_hat / (sqrt(v_hat) + eps) + weight_decay p)
// param is the master copy (f32; f64 on the CPU for f64 models); grad has param's dtype
// (fp32 main gradients). exp_avg (m) and exp_avg_sq (v) are param's dtype, or bf16 with
// --use-precision-aware-optimizer (the math still runs in fp32; the states are rounded to
// nearest even once per step). model_param, when defined, receives the updated master value
// rounded to its own dtype (bf16 / f16 / f32 model weights). Everything is written in place;
// no host synchronisation.
//
// squared_norm(x): sum_i x_i^2 as a 0-d tensor on x's device, f64 for f64 input, else f32,
// summed in a fixed order on both devices (a resumed run reproduces the clipping exactly).
// An Inf or NaN anywhere in x makes it non-finite.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::ops {

struct AdamWStep {
  double lr = 0.0;
  double beta1 = 0.9;    // --adam-beta1
  double beta2 = 0.999;  // --adam-beta2
  double eps = 1e-8;     // --adam-eps
  double weight_decay = 0.0;
  int64_t step = 1;      // t, counting from 1
  double grad_scale = 1.0;
};

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWStep& step, Tensor model_param = Tensor());

Tensor squared_norm(const Tensor& x);

}  // namespace moe::ops
