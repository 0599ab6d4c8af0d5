// Scaled-dot-product attention (the core op, after the Q/K/V projections and rotary embedding,
// before the output projection), causal or full, with grouped-query attention: MHA (Hkv = Hq),
// GQA (Hq a multiple of Hkv) and MQA (Hkv = 1). The FlashAttention convention: the forward saves
// only the per-row logsumexp, and the backward recomputes the probabilities from q, k and it, so
// no S x S matrix is ever part of the API (or, on CUDA, of memory).
//
// Shapes (layout AttentionLayout::bshd, the default):
//   q [B, S, Hq, D], k [B, S, Hkv, D], v [B, S, Hkv, Dv]  ->  out [B, S, Hq, Dv], lse [B, Hq, S]
// bshd is what the fused QKV projection produces from token rows ordered [B*S] and reshaped.
// AttentionLayout::sbhd takes Megatron's order instead: q [S, B, Hq, D], ..., out [S, B, Hq, Dv]
// (rows ordered [S*B], as under sequence/context parallelism); lse is [B, Hq, S] in both. The
// kernels are layout-agnostic (they take batch, sequence and head strides), so the two layouts
// cost the same. D (the q/k head dim) may differ from Dv (the v head dim): DeepSeek's MLA uses
// D = 192, Dv = 128.
//
// Formula. Query head h reads kv head g = h / (Hq / Hkv). With scale = softmax_scale (default
// 1 / sqrt(D); YaRN multiplies it by mscale^2, which the caller passes in):
//   s_ij   = scale * <q_i, k_j>                     (j <= i when causal; all j otherwise)
//   lse_i  = log sum_j exp(s_ij)                    (computed as m_i + log sum_j exp(s_ij - m_i))
//   P_ij   = exp(s_ij - lse_i),  out_i = sum_j P_ij v_j
// Backward, given dout (and out, lse from the forward):
//   Delta_i = <dout_i, out_i>,  dP_ij = <dout_i, v_j>,  dS_ij = P_ij (dP_ij - Delta_i)
//   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_i dS_ij q_i,  dv_j = sum_i P_ij dout_i
// and with GQA the dk, dv of a kv head sum over the Hq / Hkv query heads that read it.
// Gradient rule: activation gradients are written (dq, dk, dv are new tensors); there are no
// parameters.
//
// dtypes: q, k, v, out, dout share one dtype. CPU: f64 (computed in f64), f32, bf16, f16
// (computed in f32). CUDA: f32 and bf16 (computed in f32), D and Dv up to 256. lse is f64 for f64
// inputs and f32 otherwise. Empty inputs (B = 0 or S = 0) give empty outputs. No host
// synchronisation on CUDA; the kernels are deterministic (no atomics: dq is its own pass).
#pragma once

#include <optional>

#include "moe/core/tensor.h"

namespace moe::ops {

enum class AttentionLayout { bshd, sbhd };

struct AttentionOptions {
  // Multiplies <q_i, k_j>; unset means 1 / sqrt(D).
  std::optional<double> softmax_scale;
  // Token i attends to tokens j <= i only (the decoder mask).
  bool causal = true;
  AttentionLayout layout = AttentionLayout::bshd;
};

struct AttentionOutput {
  Tensor out;  // [B, S, Hq, Dv] (bshd) or [S, B, Hq, Dv] (sbhd), q's dtype
  Tensor lse;  // [B, Hq, S], f32 (f64 for f64 inputs): saved for the backward
};

AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionOptions& options = {});

struct AttentionGrads {
  Tensor q;  // like q
  Tensor k;  // like k (summed over the query heads of each kv head)
  Tensor v;  // like v
};

// out and lse are attention_forward's results for the same q, k, v and options.
AttentionGrads attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse,
                                  const AttentionOptions& options = {});

// The scale that `options` gives for q/k head dim `head_dim`.
double attention_scale(const AttentionOptions& options, int64_t head_dim);

}  // namespace moe::ops
