// Multi-latent attention (MLA; DeepSeek-V2, arXiv 2405.04434, section 2.1; DeepSeek-V3), exactly
// as Hugging Face transformers' DeepseekV2Attention / DeepseekV3Attention compute it. Queries,
// keys and values come from low-rank latents; each head's query and key are the concatenation
// of a position-free part (dn) and a decoupled rotary part (dr), where all heads share one
// rotary key. Tokens stay in Megatron's [S, B, H] order; the core attention op runs in sbhd.
//
//   x [S, B, H], T = S * B rows; Hq heads; dn = qk_head_dim, dr = qk_pos_emb_head_dim,
//   dv = v_head_dim, ql = q_lora_rank, kvl = kv_lora_rank
//   queries   ql > 0:  q = q_b_proj(q_a_layernorm(q_a_proj(x)))   [T, Hq * (dn + dr)]
//             ql = 0:  q = q_proj(x)                               (DeepSeek-V2-Lite)
//             per head q = [q_nope (dn) | q_pe (dr)]
//   latent    [c_kv (kvl) | k_pe (dr)] = kv_a_proj_with_mqa(x)     [T, kvl + dr]
//             c_kv <- kv_a_layernorm(c_kv)
//   keys/vals kv_b_proj(c_kv) [T, Hq * (dn + dv)], per head [k_nope (dn) | v (dv)]
//             k = [k_nope | rotary(k_pe)] (the one rotary key broadcast to every head)
//   rotary    on q_pe and k_pe only, position = s; rotary dim dr with ModelConfig's base and
//             YaRN (ops::yarn_frequencies: HF's _compute_yarn_parameters, cos/sin scaled by
//             get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)).
//             RotaryStyle::interleaved rotates DeepSeek's (2i, 2i+1) pairs and writes them in
//             half order (RotaryLayout::interleaved_to_half: HF V3's rope_interleave, the same
//             q_pe / k_pe values); HF V2's complex-number rotation writes them back in pair
//             order, a permutation of the same features applied to q and k alike, so the
//             scores and the attention output are the same. RotaryStyle::half is HF V3 with
//             rope_interleave = false (rotate_half).
//   attention o = causal softmax(scale q k^T) v per head, [S, B, Hq, dv]
//             scale = (dn + dr)^-0.5, times get_mscale(factor, mscale_all_dim)^2 when YaRN is
//             on and mscale_all_dim != 0 (HF yarn_apply_mscale)
//   output    y = o_proj(o)  [S, B, H]
//
// Parameters (HF DeepSeek names and shapes, [out, in]; prefix e.g. "model.layers.3.self_attn."):
//   q_a_proj.weight [ql, H], q_a_layernorm.weight [ql], q_b_proj.weight [Hq (dn + dr), ql]
//   (or q_proj.weight [Hq (dn + dr), H] when ql = 0), kv_a_proj_with_mqa.weight [kvl + dr, H],
//   kv_a_layernorm.weight [kvl], kv_b_proj.weight [Hq (dn + dv), kvl], o_proj.weight [H, Hq dv].
// The latent norms exist with --qk-layernorm (ModelConfig::qk_layernorm: under MLA it means
// these two RMSNorms, as Megatron's DeepSeek recipes pass it; HF's DeepSeek always has them, and
// the HF config reader sets it); without it c_q and c_kv are used unnormalised (Megatron's
// IdentityOp), and nn::attention_param_count leaves them out alike. Their epsilon is 1e-6
// (kMlaLatentNormEps), not --norm-epsilon: HF and DeepSeek's reference code build them with
// RMSNorm's default eps. --num-query-groups must be 0 or --num-attention-heads (every head has
// its own keys and values after kv_b_proj). No biases (HF attention_bias is refused upstream).
// Initialisation as GqaAttention (param_init.h): projections normal(0, init_method_std),
// o_proj the residual-writing std / sqrt(2 L), norm weights ones.
//
// Implementation: kv_a_proj_with_mqa runs as two GEMMs on the weight's row blocks [0, kvl) and
// [kvl, kvl + dr), so c_kv and k_pe come out contiguous without a column split; q's rope part
// is rotated in place of the per-head layout (ops::rotary_forward with feature_offset = dn);
// ops::mla_expand_kv_forward splits kv_b_proj's output into k_nope / v and appends the rotated
// shared k_pe to every head.
//
// Tensor parallelism (tensor_parallel.h): rank r holds the heads [r Hq/P, (r + 1) Hq/P): q_b_proj
// (or q_proj) and kv_b_proj are column-parallel (their rows), o_proj row-parallel (its columns).
// The down projections q_a_proj and kv_a_proj_with_mqa and the latent norms are replicated, as
// in Megatron, and run on the whole sequence after the input enters the TP region; their
// gradients are partial sums (each rank backpropagates its own heads' part of the latents).
// Context parallelism (context_parallel.h): the rows are this rank's two chunks of the sequence,
// q_pe and k_pe rotated at their global positions; the per-head keys and values of the whole
// sequence are gathered for the attention and their gradients reduce-scattered back.
//
// Gradient rule: backward accumulates every parameter gradient (lazily written after
// zero_grad, parameter.h) and writes dL/dx.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "moe/nn/context_parallel.h"
#include "moe/nn/kv_cache.h"
#include "moe/nn/model_config.h"
#include "moe/nn/parameter.h"
#include "moe/nn/rmsnorm_module.h"
#include "moe/nn/tensor_parallel.h"
#include "moe/ops/attention.h"
#include "moe/ops/rope.h"

namespace moe::nn {

// The epsilon of q_a_layernorm / kv_a_layernorm (HF DeepseekV2/V3RMSNorm's default).
inline constexpr double kMlaLatentNormEps = 1e-6;

struct MlaAttentionContext {
  Shape input_shape;  // [S, B, H] (S: this rank's rows under sequence parallelism)
  Tensor x;           // [T, H] the block's input rows (under sequence parallelism this rank's: the
                      // backward gathers them again)
  RMSNormContext q_a_norm, kv_a_norm;
  Tensor q_latent;   // [T, ql] q_b_proj's input (after q_a_layernorm); undefined when ql = 0
  Tensor kv_latent;  // [T, kvl] kv_b_proj's input (after kv_a_layernorm)
  Tensor q, k, v;    // the attention op's inputs [S, B, Hq, dn + dr], [.., dn + dr], [.., dv]
  Tensor out, lse;   // its results: out [S, B, Hq, dv], lse [B, Hq, S]
  Tensor positions;  // [S, B] the rows' global positions under CP (undefined: the row index)
  ContextParallelAttention cp;  // under CP: the gathered keys and values, per-chunk lse
  ops::DropoutArgs dropout;     // the attention probabilities' dropout of this call (p = 0: none)
};

class MlaAttention {
 public:
  MlaAttention() = default;
  // Parameters named prefix + "q_a_proj.weight", ... and initialised per param_init.h from
  // (seed, layer). Throws for GQA configs and for shapes that do not fit.
  MlaAttention(const ModelConfig& config, int64_t layer, const std::string& prefix, DType dtype,
               Device device, uint64_t seed, const TensorParallel& tp = {},
               const ContextParallel& cp = {});

  // x [S, B, H] -> y [S, B, H].
  // `dropout`: attention dropout on the softmax output (training; ops/attention.h), kept in
  // ctx for the backward.
  Tensor forward(const Tensor& x, MlaAttentionContext& ctx,
                 const ops::DropoutArgs& dropout = {}) const;
  // dy [S, B, H] -> dx [S, B, H]; accumulates the parameter gradients.
  Tensor backward(const Tensor& dy, MlaAttentionContext& ctx);
  // Generation with a KV cache (kv_cache.h): x [S, B, H] holds only the new tokens, rotated at
  // step.positions; their per-head keys and values join the caches. One rank only.
  Tensor forward_cached(const Tensor& x, KvStep& step) const;

  // q_a_proj, q_a_layernorm, q_b_proj (or q_proj), kv_a_proj_with_mqa, kv_a_layernorm,
  // kv_b_proj, o_proj (the norms only with --qk-layernorm).
  std::vector<Parameter*> parameters();
  void zero_grad();

  int64_t num_heads() const { return heads_; }  // this rank's
  int64_t q_lora_rank() const { return q_lora_rank_; }
  int64_t kv_lora_rank() const { return kv_lora_rank_; }
  int64_t nope_dim() const { return nope_dim_; }
  int64_t rope_dim() const { return rope_dim_; }
  int64_t v_head_dim() const { return v_dim_; }
  // The softmax scale (dn + dr)^-0.5 (times YaRN's mscale_all_dim factor squared).
  double softmax_scale() const { return *attention_.softmax_scale; }
  // The factor YaRN applies to cos / sin (1 without YaRN).
  double rotary_attention_scale() const { return rotary_.attention_scale; }

  Parameter q_a_proj, q_b_proj;  // ql > 0
  Parameter q_proj;              // ql = 0
  Parameter kv_a_proj_with_mqa, kv_b_proj, o_proj;
  std::optional<RMSNorm> q_a_layernorm;   // ql > 0 with qk_layernorm
  std::optional<RMSNorm> kv_a_layernorm;  // with qk_layernorm

 private:
  int64_t hidden_ = 0, heads_ = 0, q_lora_rank_ = 0, kv_lora_rank_ = 0;
  int64_t nope_dim_ = 0, rope_dim_ = 0, v_dim_ = 0;
  int64_t heads_total_ = 0;  // the model's heads (heads_ of them are this rank's)
  TensorParallel tp_;
  ContextParallel cp_;
  mutable ContextParallelPositions positions_;  // the rows' global positions under CP
  DType dtype_ = DType::f32;
  Tensor inv_freq_;  // [dr / 2] f32 (f64 for f64 models) on the parameters' device
  ops::RotaryArgs rotary_;
  ops::AttentionOptions attention_;
  // attention_ with this call's dropout.
  ops::AttentionOptions options_with(const ops::DropoutArgs& dropout) const {
    ops::AttentionOptions options = attention_;
    options.dropout = dropout;
    return options;
  }
};

}  // namespace moe::nn
