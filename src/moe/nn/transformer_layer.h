// One pre-norm decoder layer (Llama / Mixtral / Qwen / DeepSeek, Megatron's TransformerLayer):
//   h   = x + drop(attention(input_layernorm(x)))   attention = GqaAttention, or MlaAttention
//                                                   when config.attention_type == mla
//   out = h + drop(mlp(post_attention_layernorm(h)))  mlp = DenseMLP, or MoELayer when
//                                                   ModelConfig::is_moe_layer(layer)
// drop = hidden dropout in training (Megatron's bias-dropout-add; ops/dropout.h, sites
// attention_output and mlp_output of this layer), the identity otherwise; attention dropout
// acts on the softmax output inside the attention op.
// Tokens are [S, B, H] throughout (Megatron's order: the MoE router's per-sequence counts use B).
// Backward, from d_out:
//   dh = d_out + norm2^T(mlp^T(drop(d_out))),   dx = dh + norm1^T(attention^T(drop(dh)))
// (the backward of drop is drop itself: the same regenerated mask and scale).
// Gradient rule: parameter gradients accumulate (lazily written after zero_grad), dL/dx is
// written. The MoE layer's aux / z-loss gradients are added in its backward, scaled by
// `loss_scale` (the factor the main loss gradient carries).
// Tensor parallelism (tensor_parallel.h): attention and the MLP split themselves over TP; the
// norms, residual adds and dropouts between them act on whole sequences, or on this rank's
// sequence shard under sequence parallelism (then the norm weights' gradients are partial).
// Per-call state lives in a TransformerLayerContext the caller owns (micro-batches in flight,
// recomputation), as for MoELayer.
// Per-layer CUDA graphs (layer_graphs.h, transformer_layer_graphs.cpp): set_graphs captures the
// attention block, the MLP block, both, or the MoE block's router part, and replays them while
// graphs are on (the trainer turns them on for its training steps after the warm-up; evaluation
// and generation run eagerly).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "moe/nn/dense_mlp.h"
#include "moe/nn/gqa_attention.h"
#include "moe/nn/layer_dropout.h"
#include "moe/nn/layer_graphs.h"
#include "moe/nn/mla_attention.h"
#include "moe/nn/model_config.h"
#include "moe/nn/model_groups.h"
#include "moe/nn/moe_layer.h"
#include "moe/nn/recompute.h"
#include "moe/nn/rmsnorm_module.h"

namespace moe::nn {

struct TransformerLayerContext {
  RMSNormContext input_norm;
  AttentionContext attention;         // GQA layers
  MlaAttentionContext mla_attention;  // MLA layers
  RMSNormContext post_attention_norm;
  DenseMLPContext mlp;   // dense layers
  MoEContext moe;        // MoE layers: also holds this call's router aux_loss / z_loss
  LayerDropout dropout;  // this call's dropout (default: none)
  // Activation recomputation (recompute.h). Selective moe / mlp: the block's input, kept when the
  // first forward dropped the block's context (the backward runs the block's forward again).
  Tensor mlp_block_input;
  // Set on the context outputs() left: the forward running now recomputes the first one.
  bool recompute = false;
  // Which blocks' forwards ran as a replayed graph (layer_graphs.cpp's bits): their backward
  // then replays the unit's backward graph.
  uint8_t graphed = 0;

  // What full recomputation keeps of a first forward: the router's outputs (losses, logs) and
  // the dropout, marked for recomputation.
  TransformerLayerContext outputs() const;
};

class TransformerLayer {
 public:
  // Layer `layer` (0-based) of `config`, parameters in `dtype` on `device`, named
  // "model.layers.<layer>.<HF-like name>" and seeded from (seed, layer) (param_init.h).
  // An MoE layer copies config.moe with hidden_size, params_dtype, init_method_std and a
  // per-layer seed taken from the model; its parameters are renamed (mlp.gate.weight for the
  // router, mlp.experts.gate_up_proj [E, 2F, H], mlp.experts.down_proj [E, H, F],
  // mlp.shared_expert.{gate_up_proj,down_proj}.weight, mlp.shared_expert_gate.weight) and its
  // fc2 weights scaled to Megatron's output-layer std.
  TransformerLayer(const ModelConfig& config, int64_t layer, DType dtype, Device device,
                   uint64_t seed, const ModelGroups& groups = {});

  // x [S, B, H] -> [S, B, H] (S: this rank's shard under sequence parallelism). `dropout` (training
  // forwards) is kept in ctx for the backward.
  Tensor forward(const Tensor& x, TransformerLayerContext& ctx, const LayerDropout& dropout = {});
  Tensor backward(const Tensor& dy, TransformerLayerContext& ctx, double loss_scale = 1.0);
  // The two blocks (the forward above is their chain; each backward adds its residual).
  //   attention block: x -> h = x + drop(attention(norm1(x)));  backward dh -> dx
  //   MLP block:       h -> out = h + drop(mlp(norm2(h)));       backward d_out -> dh
  Tensor attention_block_forward(const Tensor& x, TransformerLayerContext& ctx);
  Tensor mlp_block_forward(const Tensor& h, TransformerLayerContext& ctx);
  Tensor mlp_block_backward(const Tensor& dy, TransformerLayerContext& ctx, double loss_scale);
  Tensor attention_block_backward(const Tensor& dh, TransformerLayerContext& ctx);

  // Per-layer CUDA graphs of these modules (attn; mlp for a dense layer; moe, or else
  // moe_router with moe_preprocess, for an MoE layer), captured into `pool` (shared with the
  // other layers: layer_graphs.h; null: pools of their own); none of this layer's parts: graphs
  // off. Drops graphs captured before.
  void set_graphs(const LayerGraphModules& modules, std::shared_ptr<GraphMemoryPool> pool);
  // Whether forwards and backwards run through the graphs (captured at the first call). Turning
  // them off after graphs were captured closes the shared pool to later captures.
  void set_graphs_on(bool on);
  // Graphs captured so far, and the bytes of the pools they hold apart from the shared one.
  int64_t graphs() const;
  int64_t graph_own_pool_bytes() const;

  std::vector<Parameter*> parameters();
  void zero_grad();
  // Selective recomputation of this layer's parts (recompute.h): the MoE block or dense MLP,
  // the shared expert.
  void set_recompute(const RecomputeConfig& config);
  bool is_moe() const { return moe != nullptr; }
  bool is_mla() const { return mla_attention.has_value(); }
  int64_t index() const { return layer_; }

  RMSNorm input_layernorm;
  // The attention block: self_attention for grouped-query attention (the name other code
  // uses), mla_attention for multi-latent attention. An MLA layer leaves self_attention
  // default-constructed (no parameters, not called): check is_mla() before reaching into it.
  GqaAttention self_attention;
  std::optional<MlaAttention> mla_attention;
  RMSNorm post_attention_layernorm;
  std::optional<DenseMLP> mlp;    // dense layers
  std::unique_ptr<MoELayer> moe;  // MoE layers

 private:
  std::vector<Parameter*> attention_block_parameters();
  std::vector<Parameter*> mlp_block_parameters();

  int64_t layer_ = 0;
  bool recompute_mlp_block_ = false;  // selective moe (MoE layers) or mlp (dense layers)
  // Per-layer graphs (transformer_layer_graphs.cpp): whole_unit_ when both blocks are
  // captured; else attention_unit_ and mlp_unit_ (the MLP block, or the router part).
  std::unique_ptr<LayerGraphUnit> whole_unit_, attention_unit_, mlp_unit_;
  bool mlp_unit_is_router_ = false, router_preprocess_ = false;
  bool graphs_on_ = false;
  std::vector<LayerGraphUnit*> graph_units() const;
  bool has_graphs() const;  // without building graph_units' list (every layer call asks)
  // The router counts its forwards on the host (Router::forward_count); a replay does not run
  // that code, so the layer counts it after each one.
  void count_replayed_forward();
  Tensor graphed_forward(const Tensor& x, TransformerLayerContext& ctx);
  Tensor graphed_backward(const Tensor& dy, TransformerLayerContext& ctx, double loss_scale);
  // moe_router: the MoE block with its router part (the norm, the router, the shared expert;
  // the dispatcher's preprocessing with moe_preprocess) as a graph, the rest eager.
  Tensor router_split_forward(const Tensor& h, TransformerLayerContext& ctx);
  Tensor router_split_backward(const Tensor& dy, TransformerLayerContext& ctx, double loss_scale);
  std::vector<Parameter*> router_part_parameters();
};

// The MoE block's config for layer `layer` of a model (hidden size, dtype, std and seed from the
// model, everything else from config.moe).
MoEConfig moe_config_for_layer(const ModelConfig& config, int64_t layer, DType dtype,
                               uint64_t seed);

}  // namespace moe::nn
