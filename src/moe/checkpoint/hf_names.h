// The names of a model's tensors in a Hugging Face checkpoint and in moecore, family by family
// (mixtral, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3), one layer at a time so that a
// converter can stream a 671B model (the map-based functions in convert.h are built on it).
//
// moecore fuses what HF stores apart (the agreed names, gpt_model.h):
//   dense MLP       mlp.gate_up_proj.weight [2F, H] = [mlp.gate_proj; mlp.up_proj]
//   routed experts  mlp.experts.gate_up_proj [E, 2F, H], expert e = [gate_proj_e; up_proj_e]
//                   (Mixtral: block_sparse_moe.experts.<e>.w1 = gate, w3 = up)
//                   mlp.experts.down_proj [E, H, F] = stack of down_proj_e (Mixtral: w2)
//   shared experts  mlp.shared_expert.gate_up_proj.weight = [gate_proj; up_proj] of Qwen2's
//                   mlp.shared_expert / DeepSeek's mlp.shared_experts; down_proj likewise
//   router          mlp.gate.weight (Mixtral: block_sparse_moe.gate.weight)
// and keeps every other name as HF's (attention, norms, embedding, lm_head, the expert bias
// mlp.gate.e_score_correction_bias, DeepSeek-V3's MTP layers model.layers.<L + k>.{enorm, hnorm,
// eh_proj, shared_head.norm} and their transformer layer). HF's DeepSeek-V3 MTP layers also hold
// model.layers.<L + k>.embed_tokens.weight and .shared_head.head.weight: copies of the shared
// embedding and output head, which moecore does not store (HfCopy).
//
// Every fused tensor is, in row-major storage, the plain concatenation of its HF parts in the
// order experts-major, parts-minor: fusing and splitting are byte copies, exact for every dtype
// (FP8 included; convert.h handles the block scales).
// Families other than the five use the Qwen names for the MLP (mlp.gate, mlp.experts.<e>.
// {gate,up,down}_proj, mlp.shared_expert) so that any moecore model has an HF-style layout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/core/tensor.h"
#include "moe/nn/model_config.h"

namespace moe::checkpoint {

// One moecore tensor and the HF tensors it is made of: hf_names[e][p] is part p of expert e
// (one "expert" unless `stacked`), each of shape part_shapes[p]; parts are concatenated along
// dim 0, experts stacked along a new leading dim.
struct TensorMapping {
  std::string name;   // moecore name
  Shape shape;        // moecore shape
  std::vector<Shape> part_shapes;
  std::vector<std::vector<std::string>> hf_names;
  bool stacked = false;
  bool buffer = false;  // a GPTModel buffer (the expert bias), not a Parameter

  int64_t num_experts() const { return static_cast<int64_t>(hf_names.size()); }
  bool identity() const { return !stacked && hf_names.size() == 1 && hf_names[0].size() == 1; }
};

// An HF tensor that moecore does not store because it must equal another one (`original`, the
// same name in HF and moecore). An `optional` copy may be absent from an HF checkpoint and is
// not written on export (lm_head.weight of a model with tied embeddings, which some
// checkpoints store and others leave out).
struct HfCopy {
  std::string hf_name;
  std::string original;
  bool optional = false;
};

// HF tensors that are not weights and are skipped on import: rotary inverse frequencies
// (".rotary_emb.inv_freq"), which older transformers versions saved and recompute on load.
bool ignored_hf_tensor(const std::string& name);

// The tensors converted together: the embedding, one decoder layer, one MTP layer, or the
// final norm and output layer.
struct UnitMapping {
  std::string what;  // "model.layers.3", "embedding", "final norm and output layer"
  int64_t layer = -1;  // the layer index (MTP: num_layers + k), -1 for the others
  bool mtp = false;
  std::vector<TensorMapping> tensors;
  std::vector<HfCopy> copies;
};

// Layer `layer` of `config`: 0 <= layer < num_layers (decoder) or < num_layers + mtp_num_layers
// (MTP layer k = layer - num_layers; a transformer layer that is MoE iff the last decoder layer
// is). Shapes from the config (GQA or MLA, biases, q/k norms, dense or MoE, shared experts and
// their gate, expert bias).
UnitMapping hf_layer_mapping(const nn::ModelConfig& config, int64_t layer);
// The whole model in converter order: embedding, decoder layers, MTP layers, final norm and
// output layer (lm_head only when untied).
std::vector<UnitMapping> hf_model_mapping(const nn::ModelConfig& config);

}  // namespace moe::checkpoint
