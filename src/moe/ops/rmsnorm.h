// RMSNorm (Zhang & Sennrich 2019), the normalisation of every Mixtral / Qwen3 / DeepSeek layer,
// of Qwen3's QK-norm (over head_dim of each head of q and k) and of MLA's latent norms.
//
//   x [N, H] (any leading dims are flattened into N), w [H]
//   rstd[n] = 1 / sqrt(mean_h x[n,h]^2 + eps)
//   y[n,h]  = x[n,h] * rstd[n] * w[h]
// backward (xhat = x * rstd, g = dy * w):
//   dx[n,h] = rstd[n] * (g[n,h] - xhat[n,h] * mean_h(g[n,:] * xhat[n,:]))
//   dw[h]  (+)= sum_n dy[n,h] * xhat[n,h]
// Gradient rule: dx (an activation gradient) is written; dw (a parameter gradient) is
// accumulated when `accumulate` is set and written otherwise (Parameter::take_grad_beta()).
//
// QK-norm: view q [T, heads, head_dim] as [T * heads, head_dim] (the op flattens leading dims
// itself), w [head_dim]. MLA's latent norms are plain [T, kv_lora_rank] / [T, q_lora_rank].
//
// dtypes: x, w, y, dx share one of f64, f32, bf16, f16; math in fp32 (fp64 for f64), with one
// rounding of y and dx. rstd is f32 (f64 for f64 inputs, so the fp64 gradient checks stay
// exact). dw is f32 for bf16/f16 inputs (fp32 main gradients), else x's dtype.
// Hugging Face's Qwen3/DeepSeek RMSNorm rounds x * rstd to the input dtype before multiplying by
// w in that dtype; this op rounds once (as TransformerEngine and Megatron do): for bf16 the two
// differ by about one bf16 ulp.
//
// CUDA: a power-of-two group of threads per row (a warp or more for wide rows, several rows per
// warp for narrow ones), 16-byte packed loads and stores when rows are aligned, the row sums in
// a fixed-order tree; dw is reduced deterministically: per-(row chunk, column) partial sums in
// fp32 (fp64 for f64), then a second kernel sums the chunks in order. No atomics: results are
// bitwise reproducible run to run (for the same shapes and pointer alignment). No host sync.
// Empty inputs (N = 0) work: y is empty, dw gets zeros added (or written when !accumulate).
#pragma once

#include "moe/core/tensor.h"

namespace moe::ops {

struct RmsNormOutput {
  Tensor y;     // x's shape and dtype
  Tensor rstd;  // [N] f32 (f64 for f64 x): saved for the backward
};

RmsNormOutput rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps);

// Returns dx (x's shape and dtype); accumulates (or writes) grad_weight [H].
Tensor rmsnorm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd, Tensor& grad_weight, bool accumulate);

}  // namespace moe::ops
