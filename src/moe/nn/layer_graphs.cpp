#include "moe/nn/layer_graphs.h"

#include <utility>

#include "moe/core/error.h"
#include "moe/core/trace_range.h"
#include "moe/nn/transformer_layer.h"

namespace moe::nn {

LayerGraphModules parse_layer_graph_modules(const std::vector<std::string>& names,
                                            const char* flag) {
  LayerGraphModules m;
  for (const std::string& name : names) {
    if (name == "attn") {
      m.attn = true;
    } else if (name == "mlp") {
      m.mlp = true;
    } else if (name == "moe") {
      m.moe = true;
    } else if (name == "moe_router") {
      m.moe_router = true;
    } else if (name == "moe_preprocess") {
      m.moe_preprocess = true;
    } else if (name == "full") {
      m = LayerGraphModules::whole_layer();  // Megatron's deprecated spelling of the empty list
    } else if (name == "mamba") {
      MOE_FAIL(flag, " mamba: moecore has no Mamba layers");
    } else {
      MOE_FAIL(flag, " ", name,
               ": not a module; attn, mlp, moe, moe_router, moe_preprocess (none: the whole "
               "layer)");
    }
  }
  MOE_CHECK(!m.moe_preprocess || m.moe_router, flag,
            " moe_preprocess: the dispatcher's preprocessing is captured with the router; add "
            "moe_router");
  return m.any() ? m : LayerGraphModules::whole_layer();
}

std::string describe_layer_graph_modules(const LayerGraphModules& m) {
  if (m.attn && m.mlp && m.moe) return "whole layers";
  std::string s;
  for (const auto& [on, name] : {std::pair{m.attn, "attn"},
                                 {m.mlp, "mlp"},
                                 {m.moe, "moe"},
                                 {m.moe_router, "moe_router"},
                                 {m.moe_preprocess, "moe_preprocess"}})
    if (on) s += (s.empty() ? "" : " ") + std::string(name);
  return s;
}

namespace {

std::vector<bool> zero_flags(const std::vector<Parameter*>& params) {
  std::vector<bool> flags;
  flags.reserve(params.size());
  for (const Parameter* p : params) flags.push_back(p->grad_is_zero);
  return flags;
}

bool same_shapes(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].defined() != b[i].defined()) return false;
    if (a[i].defined() && a[i].shape() != b[i].shape()) return false;
  }
  return true;
}

// Buffers the graph reads, allocated outside its pool: every call copies into them.
std::vector<Tensor> input_buffers(const std::vector<Tensor>& inputs) {
  std::vector<Tensor> buffers;
  for (const Tensor& t : inputs) buffers.push_back(t.defined() ? t.clone() : Tensor());
  return buffers;
}

void copy_inputs(std::vector<Tensor>& buffers, const std::vector<Tensor>& inputs) {
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined()) buffers[i].copy_(inputs[i]);
}

}  // namespace

void LayerGraphUnit::copy_fields(TransformerLayerContext& to,
                                 const TransformerLayerContext& from) const {
  if (parts_ & kAttentionPart) {
    to.input_norm = from.input_norm;
    to.attention = from.attention;
    to.mla_attention = from.mla_attention;
  }
  if (parts_ & (kMlpPart | kRouterPart)) to.post_attention_norm = from.post_attention_norm;
  if (parts_ & kMlpPart) {
    to.mlp = from.mlp;
    to.moe = from.moe;
  }
  if (parts_ & kRouterPart) {
    to.moe.input_shape = from.moe.input_shape;
    to.moe.router = from.moe.router;
    to.moe.shared = from.moe.shared;
    to.moe.dispatch = from.moe.dispatch;
  }
}

void LayerGraphUnit::capture(CudaGraph& graph, Device device, const char* pass,
                             const std::function<void()>& f) const {
  try {
    traced("cuda_graph.capture", [&] { graph.capture(device, f, shared_pool_); });
  } catch (const Error& e) {
    const char* part = (parts_ & kAttentionPart) && (parts_ & kMlpPart) ? "whole layer"
                       : (parts_ & kAttentionPart)                      ? "attention block"
                       : (parts_ & kMlpPart)                            ? "MLP block"
                                                                        : "router";
    MOE_FAIL("--cuda-graph-impl local: the ", pass, " of decoder layer ", layer_, "'s ", part,
             " cannot be captured: ", e.what(),
             ". A captured block must not wait for the host: an MoE block needs grouped GEMMs that "
             "read their counts on the GPU (--moe-grouped-gemm-backend cutlass, on an sm_90 GPU, "
             "with expert widths whose rows are whole multiples of 16 bytes); leave this block out "
             "of --cuda-graph-modules otherwise");
  }
}

std::vector<Tensor> LayerGraphUnit::forward(const std::vector<Tensor>& inputs,
                                            TransformerLayerContext& ctx, const Run& run,
                                            const std::function<void()>& host_state) {
  if (forward_ && !same_shapes(forward_->inputs, inputs)) return run(inputs, ctx);
  if (!forward_) {
    auto f = std::make_unique<Forward>();
    f->inputs = input_buffers(inputs);
    f->ctx = std::make_unique<TransformerLayerContext>();
    f->ctx->dropout = ctx.dropout;
    f->ctx->recompute = ctx.recompute;
    f->shared_pool = shared_pool_ != nullptr;
    capture(f->graph, inputs.front().device(), "forward",
            [&] { f->outputs = run(f->inputs, *f->ctx); });
    forward_ = std::move(f);
  } else {
    copy_inputs(forward_->inputs, inputs);
    if (host_state) host_state();
  }
  traced("cuda_graph.replay", [&] { forward_->graph.replay(); });
  copy_fields(ctx, *forward_->ctx);
  ctx.graphed |= parts_;
  return forward_->outputs;
}

std::vector<Tensor> LayerGraphUnit::backward(const std::vector<Tensor>& inputs,
                                             TransformerLayerContext& ctx, double loss_scale,
                                             const std::vector<Parameter*>& params,
                                             const Run& run) {
  if ((ctx.graphed & parts_) != parts_) return run(inputs, ctx);
  const std::vector<bool> flags = zero_flags(params);
  Backward* kind = nullptr;
  for (const auto& b : backwards_)
    if (b->loss_scale == loss_scale && b->grad_is_zero == flags) kind = b.get();
  if (kind == nullptr) {
    auto b = std::make_unique<Backward>();
    b->loss_scale = loss_scale;
    b->grad_is_zero = flags;
    b->inputs = input_buffers(inputs);
    // The backward reads what the forward's replay left in its pool (ctx's fields); a copy,
    // since a backward may move tensors out of the context it is given.
    TransformerLayerContext captured = ctx;
    b->shared_pool = shared_pool_ != nullptr;
    capture(b->graph, inputs.front().device(), "backward",
            [&] { b->outputs = run(b->inputs, captured); });
    b->grad_is_zero_after = zero_flags(params);
    kind = b.get();
    backwards_.push_back(std::move(b));
  } else {
    MOE_CHECK(same_shapes(kind->inputs, inputs), "LayerGraphUnit::backward: decoder layer ", layer_,
              "'s gradients do not have the shapes of the captured call's");
    copy_inputs(kind->inputs, inputs);
    for (size_t i = 0; i < params.size(); ++i)
      params[i]->grad_is_zero = kind->grad_is_zero_after[i];
  }
  traced("cuda_graph.replay", [&] { kind->graph.replay(); });
  copy_fields(ctx, TransformerLayerContext{});
  ctx.graphed &= static_cast<uint8_t>(~parts_);
  return kind->outputs;
}

int64_t LayerGraphUnit::graphs() const {
  return (forward_ ? 1 : 0) + static_cast<int64_t>(backwards_.size());
}

int64_t LayerGraphUnit::own_pool_bytes() const {
  int64_t bytes = 0;
  if (forward_ && !forward_->shared_pool) bytes += forward_->graph.pool_bytes();
  for (const auto& b : backwards_)
    if (!b->shared_pool) bytes += b->graph.pool_bytes();
  return bytes;
}

}  // namespace moe::nn
