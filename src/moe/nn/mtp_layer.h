// One multi-token-prediction (MTP) module of DeepSeek-V3 (arXiv 2412.19437, 2.2), as
// Megatron-Core's MultiTokenPredictionLayer computes it (--mtp-num-layers):
//
//   e      = embedding(ids shifted left by k)   [S, B, H]  (the model's shared embedding; the
//                                                           caller looks it up)
//   x      = [enorm(e), hnorm(h_prev)]          [S, B, 2H] (embedding first, then the hidden
//                                                           state: Megatron's torch.cat order)
//   u      = x eh_proj^T                        [S, B, H]  eh_proj.weight [H, 2H], no bias
//   v      = TransformerLayer(u)                           (causal attention over the same
//                                                           positions 0..S-1, then the MLP)
//   h      = final_norm(v)                      [S, B, H]  (HF: shared_head.norm)
// h_prev is the main decoder's output after its final norm for the first module, else the
// previous module's h. The caller (GPTModel) applies the shared output layer and the loss.
//
// The transformer layer is layer num_layers + depth of the model (names
// "model.layers.<num_layers + depth>.*", HF's own layout for DeepSeek-V3's MTP layer); it is
// an MoE layer iff the last decoder layer is one (as param_count.h counts it), and its
// attention is the model's (GQA or MLA). Initialisation as Megatron: eh_proj normal(0, std),
// the norms ones, the residual-writing projections of the layer normal(0, std / sqrt(2 L))
// with L = --num-layers (the decoder's depth, not counting MTP layers).
//
// Backward (gradient rule: parameter gradients accumulate, lazily written after zero_grad;
// the activation gradients d e and d h_prev are written):
//   dv = final_norm^T(dh), du = layer^T(dv) (its MoE aux / z-loss gradients scaled by
//   loss_scale), dW_eh += du^T x, dx = du W_eh, then d e = enorm^T(dx[:, :H]) and
//   d h_prev = hnorm^T(dx[:, H:]).
//
// The concatenation along the hidden dimension is a row interleaving: with the stacked rows
// [enorm(e); hnorm(h_prev)] as [2T, H], x viewed as [2T, H] holds row t of the first half at
// row 2t and row t of the second half at row 2t + 1. That is a fixed row permutation, done by
// ops::permute_forward / permute_backward with a map built once per token count (a copy, no
// arithmetic: exact in every dtype, deterministic, no host synchronisation after the first
// call for a given T).
#pragma once

#include <cstdint>
#include <vector>

#include "moe/nn/model_config.h"
#include "moe/nn/model_groups.h"
#include "moe/nn/parameter.h"
#include "moe/nn/rmsnorm_module.h"
#include "moe/nn/transformer_layer.h"
#include "moe/ops/permute.h"

namespace moe::nn {

struct MtpLayerContext {
  Shape shape;  // [S, B, H]
  RMSNormContext enorm;
  RMSNormContext hnorm;
  Tensor concat;  // [T, 2H] the eh_proj input
  TransformerLayerContext layer;
  RMSNormContext final_norm;
};

struct MtpLayerGrads {
  Tensor embedding;    // [S, B, H] d e
  Tensor prev_hidden;  // [S, B, H] d h_prev
};

// The config of the transformer layer of MTP depth `depth` (0-based): `config` extended by
// depth + 1 layers that repeat the last decoder layer's kind (MoE or dense), with
// mtp_num_layers 0, so that layer num_layers + depth is an ordinary layer of it.
ModelConfig mtp_layer_config(const ModelConfig& config, int64_t depth);

class MtpLayer {
 public:
  // MTP module `depth` (0-based, < config.mtp_num_layers) of a model with `config`; parameters
  // in `dtype` on `device`, seeded from (seed, num_layers + depth).
  MtpLayer(const ModelConfig& config, int64_t depth, DType dtype, Device device, uint64_t seed,
           const ModelGroups& groups = {});

  // embedding, prev_hidden [S, B, H] -> h [S, B, H].
  // `dropout` (training forwards) goes to the inner transformer layer.
  Tensor forward(const Tensor& embedding, const Tensor& prev_hidden, MtpLayerContext& ctx,
                 const LayerDropout& dropout = {});
  // dh [S, B, H] -> the gradients of both inputs.
  MtpLayerGrads backward(const Tensor& dh, MtpLayerContext& ctx, double loss_scale = 1.0);

  std::vector<Parameter*> parameters();
  int64_t index() const { return layer.index(); }  // num_layers + depth

  RMSNorm enorm;           // model.layers.<j>.enorm.weight [H]
  RMSNorm hnorm;           // model.layers.<j>.hnorm.weight [H]
  Parameter eh_proj;       // model.layers.<j>.eh_proj.weight [H, 2H]
  TransformerLayer layer;  // model.layers.<j>.{input_layernorm,self_attn,...,mlp}
  RMSNorm final_norm;      // model.layers.<j>.shared_head.norm.weight [H]

 private:
  // The interleaving map for T tokens (rebuilt when T or the device changes).
  const ops::PermuteMap& interleave_map(int64_t tokens, Device device);

  int64_t hidden_ = 0;
  ops::PermuteMap interleave_;
  Device interleave_device_ = Device::cpu();
};

}  // namespace moe::nn
