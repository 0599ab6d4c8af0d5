// TransformerLayer's per-layer CUDA graphs (layer_graphs.h): which units a layer's modules
// make, and its forward and backward through them.
#include <utility>

#include "moe/core/trace_range.h"
#include "moe/nn/transformer_layer.h"
#include "moe/ops/elementwise.h"

namespace moe::nn {

void TransformerLayer::set_graphs(const LayerGraphModules& modules,
                                  std::shared_ptr<GraphMemoryPool> pool) {
  whole_unit_.reset();
  attention_unit_.reset();
  mlp_unit_.reset();
  const bool block = moe ? modules.moe : modules.mlp;
  mlp_unit_is_router_ = moe && !block && modules.moe_router;
  router_preprocess_ = mlp_unit_is_router_ && modules.moe_preprocess;
  if (modules.attn && block) {
    whole_unit_ = std::make_unique<LayerGraphUnit>(layer_, kAttentionPart | kMlpPart, pool);
    return;
  }
  if (modules.attn)
    attention_unit_ = std::make_unique<LayerGraphUnit>(layer_, kAttentionPart, pool);
  if (block || mlp_unit_is_router_)
    mlp_unit_ = std::make_unique<LayerGraphUnit>(layer_, block ? kMlpPart : kRouterPart, pool);
}

bool TransformerLayer::has_graphs() const {
  return whole_unit_ || attention_unit_ || mlp_unit_;
}

std::vector<LayerGraphUnit*> TransformerLayer::graph_units() const {
  std::vector<LayerGraphUnit*> units;
  for (const auto* unit : {&whole_unit_, &attention_unit_, &mlp_unit_})
    if (*unit) units.push_back(unit->get());
  return units;
}

void TransformerLayer::set_graphs_on(bool on) {
  if (!on && graphs_on_)
    for (LayerGraphUnit* unit : graph_units())
      if (unit->graphs() > 0) unit->close_shared_pool();
  graphs_on_ = on;
}

int64_t TransformerLayer::graphs() const {
  int64_t n = 0;
  for (const LayerGraphUnit* unit : graph_units()) n += unit->graphs();
  return n;
}

int64_t TransformerLayer::graph_own_pool_bytes() const {
  int64_t bytes = 0;
  for (const LayerGraphUnit* unit : graph_units()) bytes += unit->own_pool_bytes();
  return bytes;
}

std::vector<Parameter*> TransformerLayer::router_part_parameters() {
  std::vector<Parameter*> params{&post_attention_layernorm.weight};
  for (Parameter* p : moe->route_parameters()) params.push_back(p);
  return params;
}

void TransformerLayer::count_replayed_forward() {
  if (moe) moe->router.set_forward_count(moe->router.forward_count() + 1);
}

Tensor TransformerLayer::graphed_forward(const Tensor& x, TransformerLayerContext& ctx) {
  const auto count_forward = [this] { count_replayed_forward(); };
  if (whole_unit_)
    return whole_unit_->forward(
        {x}, ctx,
        [this](const std::vector<Tensor>& in, TransformerLayerContext& c) {
          return std::vector<Tensor>{mlp_block_forward(attention_block_forward(in[0], c), c)};
        },
        count_forward)[0];
  const Tensor h = attention_unit_
                       ? attention_unit_->forward(
                             {x}, ctx,
                             [this](const std::vector<Tensor>& in, TransformerLayerContext& c) {
                               return std::vector<Tensor>{attention_block_forward(in[0], c)};
                             })[0]
                       : attention_block_forward(x, ctx);
  if (!mlp_unit_) return mlp_block_forward(h, ctx);
  if (mlp_unit_is_router_) return router_split_forward(h, ctx);
  return mlp_unit_->forward(
      {h}, ctx,
      [this](const std::vector<Tensor>& in, TransformerLayerContext& c) {
        return std::vector<Tensor>{mlp_block_forward(in[0], c)};
      },
      count_forward)[0];
}

Tensor TransformerLayer::graphed_backward(const Tensor& dy, TransformerLayerContext& ctx,
                                          double loss_scale) {
  if (whole_unit_)
    return whole_unit_->backward(
        {dy}, ctx, loss_scale, parameters(),
        [this, loss_scale](const std::vector<Tensor>& in, TransformerLayerContext& c) {
          return std::vector<Tensor>{
              attention_block_backward(mlp_block_backward(in[0], c, loss_scale), c)};
        })[0];
  Tensor dh;
  if (!mlp_unit_) {
    dh = mlp_block_backward(dy, ctx, loss_scale);
  } else if (mlp_unit_is_router_) {
    dh = router_split_backward(dy, ctx, loss_scale);
  } else {
    dh = mlp_unit_->backward(
        {dy}, ctx, loss_scale, mlp_block_parameters(),
        [this, loss_scale](const std::vector<Tensor>& in, TransformerLayerContext& c) {
          return std::vector<Tensor>{mlp_block_backward(in[0], c, loss_scale)};
        })[0];
  }
  if (!attention_unit_) return attention_block_backward(dh, ctx);
  return attention_unit_->backward(
      {dh}, ctx, loss_scale, attention_block_parameters(),
      [this](const std::vector<Tensor>& in, TransformerLayerContext& c) {
        return std::vector<Tensor>{attention_block_backward(in[0], c)};
      })[0];
}

// The MLP block's chain (mlp_block_forward) with the MoE layer in its parts: the graph runs
// the norm and MoELayer::route_forward, returning the tokens and the shared expert's output;
// the dispatch, experts and combine follow eagerly. The trainer refuses recomputation here.
Tensor TransformerLayer::router_split_forward(const Tensor& h, TransformerLayerContext& ctx) {
  const bool preprocess = router_preprocess_;
  const std::vector<Tensor> routed = mlp_unit_->forward(
      {h}, ctx,
      [this, preprocess](const std::vector<Tensor>& in, TransformerLayerContext& c) {
        c.moe.router.recompute = c.recompute;
        const Tensor normed = post_attention_layernorm.forward(in[0], c.post_attention_norm);
        const Tensor tokens = moe->tokens_of(normed, c.moe);
        const int64_t num_sequences = normed.dim() == 3 ? normed.size(1) : 1;
        Tensor shared_out = moe->route_forward(tokens, num_sequences, c.moe, preprocess);
        return std::vector<Tensor>{tokens, shared_out};
      },
      [this] { count_replayed_forward(); });
  Tensor out =
      moe->output_of(moe->routed_forward(routed[0], routed[1], ctx.moe, preprocess), ctx.moe);
  ctx.dropout.apply_(out, layer_, ops::DropoutSite::mlp_output);
  ops::add_(out, h);
  return out;
}

// Backward: the combine's, experts' and dispatch's backwards eagerly; then the graph runs
// MoELayer::route_backward and the norm's backward, and adds the residual's gradient.
Tensor TransformerLayer::router_split_backward(const Tensor& dy, TransformerLayerContext& ctx,
                                               double loss_scale) {
  const Tensor d_mlp = ctx.dropout.backward(dy, layer_, ops::DropoutSite::mlp_output);
  const Tensor d_tokens = moe->grads_of(d_mlp, ctx.moe);
  const MoELayer::RoutedGrads grads = moe->routed_backward(d_tokens, ctx.moe);
  return mlp_unit_->backward(
      {dy, d_tokens, grads.probs, grads.x, grads.shared}, ctx, loss_scale, router_part_parameters(),
      [this, loss_scale](const std::vector<Tensor>& in, TransformerLayerContext& c) {
        const MoELayer::RoutedGrads g{in[2], in[3], in[4]};
        const Tensor d_normed =
            moe->output_of(moe->route_backward(g, in[1], c.moe, loss_scale), c.moe);
        Tensor dh = post_attention_layernorm.backward(d_normed, c.post_attention_norm);
        ops::add_(dh, in[0]);
        return std::vector<Tensor>{dh};
      })[0];
}

}  // namespace moe::nn
