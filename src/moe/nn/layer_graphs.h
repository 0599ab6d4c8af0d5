// Per-layer CUDA graphs (--cuda-graph-impl local with --cuda-graph-modules, Megatron's names):
// a decoder layer's blocks captured once and replayed every micro-batch after, while what lies
// between them (collectives, host reads, the optimizer) runs eagerly.
//
// A layer has two blocks (transformer_layer.h):
//   attention block  h = x + attention(input_layernorm(x))             module attn
//   MLP block        out = h + mlp(post_attention_layernorm(h))        module mlp (dense layers)
//                                                                       or moe (MoE layers)
// and an MoE block's router part (module moe_router): its norm, router and shared expert, with
// moe_preprocess the dispatcher's preprocessing; its exchange, experts and combine stay eager.
// A unit is a stretch of captured parts: one block, both (the whole layer) when both are
// captured, or the router part. Each unit holds one forward graph and one backward graph per kind
// of backward call (the first after zero_grad writes the parameter gradients, later ones
// accumulate; the loss scale the MoE block's aux-loss gradient carries): the host state these calls
// read is frozen into a graph, so each kind has its own.
//
// A graph reads its inputs from buffers it owns (each call copies x, or the gradients, into
// them) and writes its outputs, and the context its backward reads, into its memory pool
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

// Which parts of the decoder layers are captured. Megatron's list: attn, mlp, moe, moe_router,
// moe_preprocess; an empty list (or the deprecated "full") captures the whole layer.
//   moe_router      the MoE block up to its router: the post-attention norm, the router, and
//                   the shared expert unless it overlaps the exchange (Megatron's); the
//                   dispatch, experts and combine run eagerly. Its backward: the router's, the
//                   shared expert's and the norm's, with the residual.
//   moe_preprocess  with moe_router: the dispatcher's preprocessing too (the permutation and
//                   the exchange's splits), when it does not read counts on the host (one
//                   expert-parallel rank, or drop-and-pad).
// moe (the whole MoE block) takes precedence over moe_router.
struct LayerGraphModules {
  bool attn = false;
  bool mlp = false;
  bool moe = false;
  bool moe_router = false;
  bool moe_preprocess = false;

  bool any() const { return attn || mlp || moe || moe_router; }
  static LayerGraphModules whole_layer() { return {true, true, true, false, false}; }
};
LayerGraphModules parse_layer_graph_modules(const std::vector<std::string>& names,
                                            const char* flag);
std::string describe_layer_graph_modules(const LayerGraphModules& modules);

// The parts of a layer a unit spans (bits), so which fields of the layer's context its forward
// fills and its backward reads.
enum LayerGraphPart : uint8_t {
  kAttentionPart = 1,  // input_norm, attention / mla_attention
  kMlpPart = 2,        // post_attention_norm, mlp / moe
  kRouterPart = 4,     // post_attention_norm, moe's input shape, router, shared expert, dispatch
};

// One unit's graphs: a forward and a backward per kind of call, each from and to a list of
// tensors (an undefined input stays undefined).
class LayerGraphUnit {
 public:
  using Run =
      std::function<std::vector<Tensor>(const std::vector<Tensor>&, TransformerLayerContext&)>;

  // `layer`: the decoder layer's index, for errors. `parts`: LayerGraphPart bits. `pool`: the
  // pool its captures share with the other layers' (null: each graph its own).
  LayerGraphUnit(int64_t layer, uint8_t parts, std::shared_ptr<GraphMemoryPool> pool)
      : layer_(layer), parts_(parts), shared_pool_(std::move(pool)) {}

  // The unit's forward: captured at the first call (then replayed), replayed after. The unit's
  // fields of ctx are set to what the replay wrote; ctx's dropout and recompute flags are read
  // at capture. A call whose inputs have other shapes than the captured ones runs `run`
  // eagerly. `host_state` redoes what `run` changes on the host (a counter), after every
  // replay but the capture's (whose host code ran).
  std::vector<Tensor> forward(const std::vector<Tensor>& inputs, TransformerLayerContext& ctx,
                              const Run& run, const std::function<void()>& host_state = {});
  // The unit's backward from the gradients of its outputs (and what else it reads): replays
  // the graph of this kind of call (captured at the first one), whose parameter gradients
  // follow the rule of parameter.h. A context whose forward ran eagerly runs `run` eagerly.
  // The unit's fields of ctx are cleared.
  std::vector<Tensor> backward(const std::vector<Tensor>& inputs, TransformerLayerContext& ctx,
                               double loss_scale, const std::vector<Parameter*>& params,
                               const Run& run);

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
    std::vector<Tensor> inputs, outputs;
    std::unique_ptr<TransformerLayerContext> ctx;  // the replay's context (in the pool)
  };
  struct Backward {
    double loss_scale = 1.0;
    std::vector<bool> grad_is_zero;        // the parameters' flags when the kind is called
    std::vector<bool> grad_is_zero_after;  // and after it (the capture's host code set them)
    bool shared_pool = false;
    CudaGraph graph;
    std::vector<Tensor> inputs, outputs;
  };
  void copy_fields(TransformerLayerContext& to, const TransformerLayerContext& from) const;
  // Captures what f queues into graph, an error naming the unit and the likely cause.
  void capture(CudaGraph& graph, Device device, const char* pass,
               const std::function<void()>& f) const;

  int64_t layer_;
  uint8_t parts_;
  std::shared_ptr<GraphMemoryPool> shared_pool_;
  std::unique_ptr<Forward> forward_;
  std::vector<std::unique_ptr<Backward>> backwards_;
};

}  // namespace moe::nn
