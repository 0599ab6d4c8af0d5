// Multi-latent attention's keys and values (DeepSeek-V2/V3): every query head gets its own
// non-rotary key part and value from the up-projected latent (kv_b_proj), and all heads share
// one decoupled rotary key k_pe (the MQA-style "with_mqa" part of kv_a_proj_with_mqa). This op
// splits kv_b_proj's per-head output and appends the shared rotary key to each head, producing
// the contiguous k and v the attention op reads (Megatron's fused_apply_mla_rope_for_kv without
// the rotation: rotate k_pe first with ops::rotary_forward).
//
//   kv   [tokens..., heads, dn + dv]   per head [k_nope | v]  (kv_b_proj output, HF's layout)
//   k_pe [tokens..., dr]               the shared rotary key (already rotated)
// forward:
//   k [tokens..., heads, dn + dr]:  k[..., h, j] = kv[..., h, j]          j < dn
//                                   k[..., h, j] = k_pe[..., j - dn]      dn <= j < dn + dr
//   v [tokens..., heads, dv]:       v[..., h, j] = kv[..., h, dn + j]
// backward (the transpose; activation gradients are written, there are no parameters):
//   grad_kv[..., h, j]      = grad_k[..., h, j]        j < dn
//   grad_kv[..., h, dn + j] = grad_v[..., h, j]
//   grad_k_pe[..., j]       = sum_h grad_k[..., h, dn + j]   (in head order, in fp32 / fp64)
//
// tokens... is at least one dim (e.g. [S, B]); dn >= 0, dr >= 1, dv >= 1. dtypes: all tensors
// share one of f64, f32, bf16, f16 (CPU); f64, f32, bf16, f16 (CUDA). Copies are exact; the
// head sum rounds once to the dtype. Empty inputs work. CUDA: grid-stride elementwise kernels,
// the head sum a fixed-order loop per (token, feature): deterministic, no host synchronisation.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::ops {

struct MlaKeyValue {
  Tensor k;  // [tokens..., heads, dn + dr]
  Tensor v;  // [tokens..., heads, dv]
};

// nope_dim = dn; dv = kv.size(-1) - dn and dr = k_pe.size(-1).
MlaKeyValue mla_expand_kv_forward(const Tensor& kv, const Tensor& k_pe, int64_t nope_dim);

struct MlaKeyValueGrads {
  Tensor kv;    // like kv: [tokens..., heads, dn + dv]
  Tensor k_pe;  // like k_pe: [tokens..., dr]
};

// grad_k [tokens..., heads, dn + dr], grad_v [tokens..., heads, dv].
MlaKeyValueGrads mla_expand_kv_backward(const Tensor& grad_k, const Tensor& grad_v,
                                        int64_t nope_dim);

}  // namespace moe::ops
