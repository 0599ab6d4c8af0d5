// Per-layer CUDA graphs (--cuda-graph-impl local with --cuda-graph-modules, Megatron's names):
// a decoder layer's blocks captured once and replayed every micro-batch after, while what lies
// between them (collectives, host reads, the optimizer) runs eagerly.
//
// A layer has two blocks (transformer_layer.h):
//   attention block  h = x + attention(input_layernorm(x))             module attn
//   MLP block        out = h + mlp(post_attention_layernorm(h))        module mlp (dense layers)
//                                                                       or moe (MoE layers)
// A unit is a stretch of captured blocks: one block, or both (the whole layer) when both are
// captured. Each unit holds one forward graph and one backward graph per kind of backward call
// (the first after zero_grad writes the parameter gradients, later ones accumulate; the loss
// scale the MoE block's aux-loss gradient carries): the host state these calls read is frozen
// into a graph, so each kind has its own.
//
// A graph reads its input from a buffer it owns (each call copies x or dy into it) and writes
// its output, and the context its backward reads, into its private memory pool
// (core/cuda_graph.h). The next replay of the same graph overwrites them, which is safe when
// each micro-batch's backward runs before the next micro-batch's forward (no pipeline
// schedule) and no layer is recomputed: the trainer refuses anything else.
//
// Memory: the model's layers capture into one shared pool (GPTModel::set_layer_graphs), so the
// graphs' temporaries share memory as an eager step's do; what a graph keeps (its output, the
// activations its backward reads) is held and never handed to another capture. Sharing is safe
// because a micro-batch replays the graphs in one order on one stream, forwards in layer order
// then backwards in reverse: a block a capture took from the pool was freed by a graph captured
// earlier, which used it for temporaries only, and kept data is read before any earlier-captured
// graph runs again (a layer's activations are read by its backward, and the graphs replayed in
// between, the later layers', were captured after them). The shared pool serves the captures
// of the first step that captures; graphs captured later (a new kind of backward) take pools of
// their own.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/cuda_graph.h"
#include "moe/core/tensor.h"
#include "moe/nn/parameter.h"

namespace moe::nn {

struct TransformerLayerContext;

// Which blocks of the decoder layers are captured. Megatron's list: attn, mlp, moe; an empty
// list (or the deprecated "full") captures the whole layer. moe_router and moe_preprocess
// (parts of the MoE block) are refused: moecore's MoE backward runs the router's backward in
// the middle of the block's, so the router cannot be split off as a graph of its own.
struct LayerGraphModules {
  bool attn = false;
  bool mlp = false;
  bool moe = false;

  bool any() const { return attn || mlp || moe; }
  static LayerGraphModules whole_layer() { return {true, true, true}; }
};
LayerGraphModules parse_layer_graph_modules(const std::vector<std::string>& names,
                                            const char* flag);
std::string describe_layer_graph_modules(const LayerGraphModules& modules);

// One unit's graphs. `attention_block` / `mlp_block`: which blocks it spans, so which fields
// of the layer's context its forward fills and its backward reads.
class LayerGraphUnit {
 public:
  using Run = std::function<Tensor(const Tensor&, TransformerLayerContext&)>;

  // `layer`: the decoder layer's index, for errors. `pool`: the pool its captures share with
  // the other layers' (null: each graph its own).
  LayerGraphUnit(int64_t layer, bool attention_block, bool mlp_block,
                 std::shared_ptr<GraphMemoryPool> pool)
      : layer_(layer),
        attention_block_(attention_block),
        mlp_block_(mlp_block),
        shared_pool_(std::move(pool)) {}

  // The unit's forward on x: captured at the first call (then replayed), replayed after. The
  // unit's fields of ctx are set to what the replay wrote; ctx's dropout and recompute flags
  // are read at capture. A call whose x has another shape than the captured one runs `run`
  // eagerly. `host_state` redoes what `run` changes on the host (a counter), after every
  // replay but the capture's (whose host code ran).
  Tensor forward(const Tensor& x, TransformerLayerContext& ctx, const Run& run,
                 const std::function<void()>& host_state = {});
  // The unit's backward from dy (the gradient of its output): replays the graph of this kind
  // of call (captured at the first one), whose parameter gradients follow the rule of
  // parameter.h, and returns the gradient of its input. A context whose forward ran eagerly
  // runs `run` eagerly. The unit's fields of ctx are cleared.
  Tensor backward(const Tensor& dy, TransformerLayerContext& ctx, double loss_scale,
                  const std::vector<Parameter*>& params, const Run& run);

  // Later captures take pools of their own (the step that captured the shared pool's graphs
  // is over).
  void close_shared_pool() { shared_pool_ = nullptr; }
  // Graphs captured so far, and the bytes of the pools they hold alone (the shared pool is the
  // model's to count).
  int64_t graphs() const;
  int64_t own_pool_bytes() const;

 private:
  struct Forward {
    bool shared_pool = false;  // captured into the shared pool
    CudaGraph graph;
    Tensor input, output;
    std::unique_ptr<TransformerLayerContext> ctx;  // the replay's context (in the pool)
  };
  struct Backward {
    double loss_scale = 1.0;
    std::vector<bool> grad_is_zero;        // the parameters' flags when the kind is called
    std::vector<bool> grad_is_zero_after;  // and after it (the capture's host code set them)
    bool shared_pool = false;
    CudaGraph graph;
    Tensor input, output;
  };
  void copy_fields(TransformerLayerContext& to, const TransformerLayerContext& from) const;
  // Captures what f queues into graph, an error naming the unit and the likely cause.
  void capture(CudaGraph& graph, Device device, const char* pass,
               const std::function<void()>& f) const;

  int64_t layer_;
  bool attention_block_, mlp_block_;
  std::shared_ptr<GraphMemoryPool> shared_pool_;
  std::unique_ptr<Forward> forward_;
  std::vector<std::unique_ptr<Backward>> backwards_;
};

}  // namespace moe::nn
