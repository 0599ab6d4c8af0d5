// Grouped-query self-attention block (MHA when heads == query groups, MQA with one group), as in
// Mixtral, Qwen2/Qwen3(-MoE) and Llama. Tokens stay in Megatron's [S, B, H] order throughout;
// the core attention op runs in its sbhd layout, so no transposes are needed.
//
//   x [S, B, H]  (T = S * B rows)
//   q = x Wq^T (+ bq)  [S, B, Hq, D]      Wq [Hq * D, H]      (HF q_proj)
//   k = x Wk^T (+ bk)  [S, B, Hkv, D]     Wk [Hkv * D, H]     (HF k_proj)
//   v = x Wv^T (+ bv)  [S, B, Hkv, D]     Wv [Hkv * D, H]     (HF v_proj)
//   q, k <- RMSNorm over D of each head, weights [D]          (--qk-layernorm: Qwen3's q_norm,
//                                                              k_norm; before rotary, as HF)
//   q, k <- rotary on the first Dr = int(D * rotary_percent) features of each head
//           (ops::rotary_forward; half = HF rotate_half, interleaved = GPT-J pairs; YaRN
//            frequencies and mscale when ModelConfig::yarn is set), position = s
//   o = causal softmax(q k^T / sqrt(D)) v,  query head h reads kv head h / (Hq / Hkv)
//   y = o Wo^T  [S, B, H]                 Wo [H, Hq * D]      (HF o_proj, Megatron linear_proj)
//
// The projections are separate (HF's q_proj / k_proj / v_proj), not Megatron's fused
// linear_qkv: three GEMMs whose outputs are already the [S, B, heads, D] tensors the attention
// op reads, with no column split and no per-group interleaving (Megatron's linear_qkv orders
// rows [group: its q heads, k, v]); the checkpoint converter maps either layout onto these.
// Biases (--add-qkv-bias, Qwen2) are added with a K = 1 GEMM (ones [T, 1] x bias [1, N]).
//
// Tensor parallelism (tensor_parallel.h): each TP rank holds the heads [r Hq/P, (r + 1) Hq/P)
// and their key/value groups [r Hkv/P, (r + 1) Hkv/P) (Megatron splits by query groups, so P
// must divide both): q/k/v_proj are column-parallel (their rows), o_proj row-parallel (its
// columns); the input is entered into the TP region before the projections and the output
// leaves it after o_proj (all-reduce, or reduce-scatter with sequence parallelism). QK-norm
// weights are replicated with partial gradients (each rank normalises its own heads).
// Context parallelism (context_parallel.h): the rows are this rank's two chunks of the sequence,
// rotated at their global positions; the keys and values of the whole sequence are gathered for
// the attention and their gradients reduce-scattered back.
//
// Gradient rule: backward accumulates every parameter gradient (lazily written after
// zero_grad, parameter.h) and writes dL/dx. MLA (AttentionType::mla) is a separate module
// (mla_attention.h): constructing this one for an MLA config throws.
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

struct AttentionContext {
  Shape input_shape;  // [S, B, H] (S: this rank's rows under sequence parallelism)
  Tensor x;           // [T, H] the block's input rows (under sequence parallelism this rank's: the
                      // backward gathers them again)
  RMSNormContext q_norm, k_norm;
  Tensor q, k, v;    // [S, B, heads, D] as the attention op read them (normed, rotated)
  Tensor out, lse;   // the attention op's results: out [S, B, Hq, D], lse [B, Hq, S]
  Tensor positions;  // [S, B] the rows' global positions under CP (undefined: the row index)
  ContextParallelAttention cp;  // under CP: the gathered keys and values, per-chunk lse
  ops::DropoutArgs dropout;     // the attention probabilities' dropout of this call (p = 0: none)
};

class GqaAttention {
 public:
  GqaAttention() = default;
  // Parameters are named prefix + "q_proj.weight", ... (prefix e.g. "model.layers.3.self_attn.")
  // and initialised per param_init.h from (seed, layer). Throws for MLA configs and for shapes
  // that do not fit (heads not a multiple of query groups, odd or empty rotary dim, query
  // groups not divisible by the TP size).
  GqaAttention(const ModelConfig& config, int64_t layer, const std::string& prefix, DType dtype,
               Device device, uint64_t seed, const TensorParallel& tp = {},
               const ContextParallel& cp = {});

  // x [S, B, H] -> y [S, B, H].
  // `dropout`: attention dropout on the softmax output (training; ops/attention.h), kept in
  // ctx for the backward.
  Tensor forward(const Tensor& x, AttentionContext& ctx,
                 const ops::DropoutArgs& dropout = {}) const;
  // dy [S, B, H] -> dx [S, B, H]; accumulates the parameter gradients.
  Tensor backward(const Tensor& dy, AttentionContext& ctx);
  // Generation with a KV cache (kv_cache.h): x [S, B, H] holds only the new tokens, rotated at
  // step.positions; their k, v join the caches and they attend over all cached keys. One rank
  // only (no tensor parallelism).
  Tensor forward_cached(const Tensor& x, KvStep& step) const;

  std::vector<Parameter*> parameters();
  void zero_grad();

  int64_t num_heads() const { return heads_; }          // this rank's
  int64_t num_query_groups() const { return groups_; }  // this rank's
  int64_t head_dim() const { return head_dim_; }
  int64_t rotary_dim() const { return rotary_dim_; }

  Parameter q_proj, k_proj, v_proj, o_proj;  // weights, [out, in]
  Parameter q_bias, k_bias, v_bias;          // [Hq * D], [Hkv * D], [Hkv * D] with add_qkv_bias
  std::optional<RMSNorm> q_norm, k_norm;     // weight [D] with qk_layernorm

 private:
  int64_t hidden_ = 0, heads_ = 0, groups_ = 0, head_dim_ = 0, rotary_dim_ = 0;
  int64_t heads_total_ = 0;  // the model's query heads (heads_ of them are this rank's)
  bool bias_ = false;
  TensorParallel tp_;
  ContextParallel cp_;
  mutable ContextParallelPositions positions_;  // the rows' global positions under CP
  DType dtype_ = DType::f32;
  Tensor inv_freq_;  // [Dr / 2] f32 (f64 for f64 models) on the parameters' device
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
