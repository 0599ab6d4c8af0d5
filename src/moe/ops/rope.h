// Rotary position embeddings (RoFormer, Su et al. 2021) for q and k, with partial rotary, the
// three pair layouts used by the supported model families, and YaRN frequency scaling.
//
// Shapes: x [S, B, heads, D] (Megatron's layout) or [T, heads, D]; in general any
// [tokens..., heads, D] with at least 3 dims, tokens = the product of the leading dims. Only
// the Dr = 2 * inv_freq.size(0) features [o, o + Dr) of each head are rotated, o =
// RotaryArgs::feature_offset (0 unless set, o + Dr <= D); the rest pass through unchanged
// (partial rotary: Megatron's rotary_percent, HF's partial_rotary_factor, with o = 0; MLA's
// query heads [q_nope (dn) | q_pe (dr)] rotate their last dr features, o = dn). The pair
// indices below are relative to o.
//
// Positions: p(token) = position_offset + (positions undefined ? index along dim 0 (s or t)
//                                          : positions[token])
// where `positions` (i32/i64, x's device) has either x.shape[:-2] (one position per token, e.g.
// packed sequences or context-parallel chunks) or [x.size(0)] (per sequence index, shared by the
// batch).
//
// For pair i in [0, Dr/2), angle a = p * inv_freq[i], c = m cos a, s = m sin a
// (m = attention_scale: YaRN's mscale, 1 otherwise), input pair (u, v) -> output pair (u', v'):
//     x'[u'] = x[u] c - x[v] s,    x'[v'] = x[v] c + x[u] s
//   layout              (u, v) read        (u', v') written   used by
//   half                (i, i + Dr/2)      the same           GPT-NeoX, Llama, Qwen, Mixtral
//                                                            (HF rotate_half, Megatron default)
//   interleaved         (2i, 2i + 1)       the same           GPT-J, DeepSeek's original paper,
//                                                            Megatron rotary_interleaved
//   interleaved_to_half (2i, 2i + 1)       (i, i + Dr/2)      HF DeepSeek-V2/V3
//                                                            (apply_rotary_pos_emb_interleave /
//                                                            rope_interleave) and Megatron MLA
// HF's DeepSeek code reshapes each head's rope part [Dr/2, 2] -> [2, Dr/2] (evens, then odds)
// and then applies rotate_half: that is interleaved_to_half, and this op reproduces HF's q_pe /
// k_pe exactly. "interleaved" gives the same values with the rotary features in the original
// (pair-adjacent) order; since q and k are permuted alike, attention scores are the same with
// either, so a checkpoint can use either as long as q and k agree.
//
// Backward (the transpose, i.e. the rotation by -a, scaled by m; pass-through copies dy):
//     dx[u] = dy[u'] c + dy[v'] s,  dx[v] = dy[v'] c - dy[u'] s
// Gradient rule: dx (an activation gradient) is written; rotary has no parameters.
//
// Precision: the angle and cos/sin are computed from the positions in fp32 (fp64 for f64 x), as
// HF and Megatron do (float(p) * inv_freq in fp32, then cos/sin); the rotation runs in that type
// and rounds once to x's dtype. HF rounds cos/sin to bf16 first for bf16 models, so bf16 results
// differ from HF's by about a bf16 ulp. No table is cached: cos/sin are recomputed per call.
// dtypes: x, y, dy, dx share one of f64, f32, bf16, f16; inv_freq is f32 or f64 on x's device.
// CUDA: one block per token computes the token's cos/sin once into shared memory, then rotates
// all its heads; no reductions (deterministic), no host synchronisation. Empty inputs work.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::ops {

enum class RotaryLayout { half, interleaved, interleaved_to_half };

// ---- inverse frequencies (host, fp64) --------------------------------------------------------
// The frequency functions are separate from the rotation so that scaling schemes replace them.

struct RotaryFrequencies {
  std::vector<double> inv_freq;  // [Dr/2]
  double attention_scale = 1.0;  // m: multiplies cos and sin (YaRN), 1 for plain RoPE
};

// inv_freq[i] = theta^(-2i / Dr), i in [0, Dr/2). Dr even and > 0, theta > 1.
RotaryFrequencies rope_frequencies(int64_t rotary_dim, double theta);

// YaRN (Peng et al. 2023) exactly as Hugging Face transformers' _compute_yarn_parameters
// (modeling_rope_utils.py) computes it for rope_scaling {"type": "yarn", ...} (DeepSeek-V2/V3):
//   pos_freq[i] = theta^(2i / Dr);  extra = 1 / pos_freq;  inter = 1 / (factor * pos_freq)
//   corr(r) = Dr * ln(original_max_position_embeddings / (2 pi r)) / (2 ln theta)
//   low = max(floor(corr(beta_fast)), 0), high = min(ceil(corr(beta_slow)), Dr - 1)
//         (no floor/ceil when truncate == false); high += 0.001 when low == high
//   ramp[i] = clamp((i - low) / (high - low), 0, 1),  e = 1 - ramp[i]
//   inv_freq[i] = inter * (1 - e) + extra * e
//   attention_scale = attention_factor if given, else
//     get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)  if both are non-zero,
//     get_mscale(factor, 1)                                            otherwise.
// For DeepSeek-V3 configs `factor` is rope_scaling.factor (40), which equals older HF versions'
// max_position_embeddings / original_max_position_embeddings (163840 / 4096).
// DeepSeek's attention additionally multiplies its softmax scale by
// yarn_get_mscale(factor, mscale_all_dim)^2 (HF DeepseekV3Attention.scaling): not done here.
struct YarnScaling {
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;          // 0: unset (HF tests `if mscale and mscale_all_dim`)
  double mscale_all_dim = 0.0;  // 0: unset
  std::optional<double> attention_factor;  // overrides the mscale rule when set
  bool truncate = true;         // HF's rope_scaling "truncate" (default true)
};
RotaryFrequencies yarn_frequencies(int64_t rotary_dim, double theta, const YarnScaling& yarn);

// 0.1 * mscale * ln(scale) + 1 for scale > 1, else 1 (HF / DeepSeek yarn_get_mscale).
double yarn_get_mscale(double scale, double mscale);

// The inverse frequencies as a [Dr/2] tensor (f32 or f64) on `device`, for rotary_*.
Tensor inv_freq_tensor(const RotaryFrequencies& freqs, DType dtype, Device device);

// ---- the rotation ------------------------------------------------------------------------------

struct RotaryArgs {
  RotaryLayout layout = RotaryLayout::half;
  double attention_scale = 1.0;  // RotaryFrequencies::attention_scale
  int64_t position_offset = 0;   // added to every position (e.g. a KV-cache offset)
  int64_t feature_offset = 0;    // o: the first rotated feature of each head (o + Dr <= D)
};

// y = rotary(x); positions may be undefined (index along dim 0). Returns x's shape and dtype.
Tensor rotary_forward(const Tensor& x, const Tensor& inv_freq, const Tensor& positions,
                      const RotaryArgs& args);
// dx from dy, same arguments as the forward.
Tensor rotary_backward(const Tensor& grad_y, const Tensor& inv_freq, const Tensor& positions,
                       const RotaryArgs& args);

}  // namespace moe::ops
