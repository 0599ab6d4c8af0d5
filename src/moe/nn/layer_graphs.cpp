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
    } else if (name == "full") {
      m = LayerGraphModules::whole_layer();  // Megatron's deprecated spelling of the empty list
    } else if (name == "moe_router" || name == "moe_preprocess") {
      MOE_FAIL(flag, " ", name,
               ": a graph of part of the MoE block is not built (moecore's MoE backward runs the "
               "router's backward inside the block's, so the router is not a unit of its own); "
               "capture the whole block with moe when its layers do not synchronise "
               "(--moe-grouped-gemm-backend cutlass, one expert-parallel rank), or attn alone");
    } else if (name == "mamba") {
      MOE_FAIL(flag, " mamba: moecore has no Mamba layers");
    } else {
      MOE_FAIL(flag, " ", name, ": not a module; attn, mlp, moe (none: the whole layer)");
    }
  }
  return m.any() ? m : LayerGraphModules::whole_layer();
}

std::string describe_layer_graph_modules(const LayerGraphModules& m) {
  if (m.attn && m.mlp && m.moe) return "whole layers";
  std::string s;
  for (const auto& [on, name] : {std::pair{m.attn, "attn"}, {m.mlp, "mlp"}, {m.moe, "moe"}})
    if (on) s += (s.empty() ? "" : " ") + std::string(name);
  return s;
}

namespace {

constexpr uint8_t kAttentionBit = 1, kMlpBit = 2;

std::vector<bool> zero_flags(const std::vector<Parameter*>& params) {
  std::vector<bool> flags;
  flags.reserve(params.size());
  for (const Parameter* p : params) flags.push_back(p->grad_is_zero);
  return flags;
}

}  // namespace

void LayerGraphUnit::copy_fields(TransformerLayerContext& to,
                                 const TransformerLayerContext& from) const {
  if (attention_block_) {
    to.input_norm = from.input_norm;
    to.attention = from.attention;
    to.mla_attention = from.mla_attention;
  }
  if (mlp_block_) {
    to.post_attention_norm = from.post_attention_norm;
    to.mlp = from.mlp;
    to.moe = from.moe;
  }
}

void LayerGraphUnit::capture(CudaGraph& graph, Device device, const char* pass,
                             const std::function<void()>& f) const {
  try {
    traced("cuda_graph.capture", [&] { graph.capture(device, f, shared_pool_); });
  } catch (const Error& e) {
    const char* blocks = attention_block_ && mlp_block_ ? "whole layer"
                         : attention_block_             ? "attention block"
                                                        : "MLP block";
    MOE_FAIL("--cuda-graph-impl local: the ", pass, " of decoder layer ", layer_, "'s ", blocks,
             " cannot be captured: ", e.what(),
             ". A captured block must not wait for the host: an MoE block needs grouped GEMMs that "
             "read their counts on the GPU (--moe-grouped-gemm-backend cutlass, on an sm_90 GPU, "
             "with expert widths whose rows are whole multiples of 16 bytes); leave this block out "
             "of --cuda-graph-modules otherwise");
  }
}

Tensor LayerGraphUnit::forward(const Tensor& x, TransformerLayerContext& ctx, const Run& run,
                               const std::function<void()>& host_state) {
  const uint8_t bits = (attention_block_ ? kAttentionBit : 0) | (mlp_block_ ? kMlpBit : 0);
  if (forward_ && forward_->input.shape() != x.shape()) return run(x, ctx);
  if (!forward_) {
    auto f = std::make_unique<Forward>();
    f->input = x.clone();  // outside the graph's pool: every call copies into it
    f->ctx = std::make_unique<TransformerLayerContext>();
    f->ctx->dropout = ctx.dropout;
    f->ctx->recompute = ctx.recompute;
    f->shared_pool = shared_pool_ != nullptr;
    capture(f->graph, x.device(), "forward", [&] { f->output = run(f->input, *f->ctx); });
    forward_ = std::move(f);
  } else {
    forward_->input.copy_(x);
    if (host_state) host_state();
  }
  traced("cuda_graph.replay", [&] { forward_->graph.replay(); });
  copy_fields(ctx, *forward_->ctx);
  ctx.graphed |= bits;
  return forward_->output;
}

Tensor LayerGraphUnit::backward(const Tensor& dy, TransformerLayerContext& ctx, double loss_scale,
                                const std::vector<Parameter*>& params, const Run& run) {
  const uint8_t bits = (attention_block_ ? kAttentionBit : 0) | (mlp_block_ ? kMlpBit : 0);
  if ((ctx.graphed & bits) != bits) return run(dy, ctx);
  const std::vector<bool> flags = zero_flags(params);
  Backward* kind = nullptr;
  for (const auto& b : backwards_)
    if (b->loss_scale == loss_scale && b->grad_is_zero == flags) kind = b.get();
  if (kind == nullptr) {
    MOE_CHECK(dy.shape() == forward_->output.shape(), "LayerGraphUnit::backward: dy ", dy.str(),
              " does not match the captured forward's output ", forward_->output.str());
    auto b = std::make_unique<Backward>();
    b->loss_scale = loss_scale;
    b->grad_is_zero = flags;
    b->input = dy.clone();
    // The backward reads what the forward's replay left in its pool (ctx's fields); a copy,
    // since a backward may move tensors out of the context it is given.
    TransformerLayerContext captured = ctx;
    b->shared_pool = shared_pool_ != nullptr;
    capture(b->graph, dy.device(), "backward", [&] { b->output = run(b->input, captured); });
    b->grad_is_zero_after = zero_flags(params);
    kind = b.get();
    backwards_.push_back(std::move(b));
  } else {
    kind->input.copy_(dy);
    for (size_t i = 0; i < params.size(); ++i)
      params[i]->grad_is_zero = kind->grad_is_zero_after[i];
  }
  traced("cuda_graph.replay", [&] { kind->graph.replay(); });
  copy_fields(ctx, TransformerLayerContext{});
  ctx.graphed &= static_cast<uint8_t>(~bits);
  return kind->output;
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
