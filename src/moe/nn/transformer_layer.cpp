#include "moe/nn/transformer_layer.h"

#include <string>

#include "moe/core/trace_range.h"
#include "moe/nn/param_init.h"
#include "moe/ops/dropout.h"
#include "moe/ops/elementwise.h"

namespace moe::nn {

MoEConfig moe_config_for_layer(const ModelConfig& config, int64_t layer, DType dtype,
                               uint64_t seed) {
  MoEConfig moe = config.moe;
  moe.hidden_size = config.hidden_size;
  moe.params_dtype = dtype;
  moe.init_method_std = config.init_method_std;
  moe.seed = parameter_seed(seed, layer, "moe");
  return moe;
}

TransformerLayer::TransformerLayer(const ModelConfig& config, int64_t layer, DType dtype,
                                   Device device, uint64_t seed, const ModelGroups& groups)
    : layer_(layer) {
  const TensorParallel& tp = groups.tp;
  MOE_CHECK(layer >= 0 && layer < config.num_layers, "TransformerLayer: layer ", layer,
            " is outside [0, --num-layers ", config.num_layers, ")");
  const std::string prefix = "model.layers." + std::to_string(layer) + ".";
  input_layernorm = RMSNorm(prefix + "input_layernorm.weight", config.hidden_size,
                            config.norm_epsilon, dtype, device);
  if (config.attention_type == AttentionType::mla)
    mla_attention.emplace(config, layer, prefix + "self_attn.", dtype, device, seed, tp, groups.cp);
  else
    self_attention =
        GqaAttention(config, layer, prefix + "self_attn.", dtype, device, seed, tp, groups.cp);
  post_attention_layernorm = RMSNorm(prefix + "post_attention_layernorm.weight", config.hidden_size,
                                     config.norm_epsilon, dtype, device);
  set_tp_replicated(input_layernorm.weight, tp, tp.sequence_parallel);
  set_tp_replicated(post_attention_layernorm.weight, tp, tp.sequence_parallel);
  if (!config.is_moe_layer(layer)) {
    mlp.emplace(config, layer, prefix + "mlp.", dtype, device, seed, tp);
    return;
  }
  moe = std::make_unique<MoELayer>(moe_config_for_layer(config, layer, dtype, seed), device,
                                   groups.moe, tp);
  moe->router.weight.name = prefix + "mlp.gate.weight";
  moe->experts.fc1.name = prefix + "mlp.experts.gate_up_proj";
  moe->experts.fc2.name = prefix + "mlp.experts.down_proj";
  // The experts draw fc2 with init_method_std; Megatron's experts use output_layer_init_method.
  // Scaling normal(0, std) draws by c gives exactly normal(0, c std), and keeps the values that
  // any expert-parallel mapping draws for its shard consistent.
  const double output_scale =
      config.init_method_std > 0
          ? output_layer_std(config.init_method_std, config.num_layers) / config.init_method_std
          : 1.0;
  ops::scale_(moe->experts.fc2.value, output_scale);
  if (moe->shared_expert) {
    moe->shared_expert->fc1.name = prefix + "mlp.shared_expert.gate_up_proj.weight";
    moe->shared_expert->fc2.name = prefix + "mlp.shared_expert.down_proj.weight";
    moe->shared_expert->gate.name = prefix + "mlp.shared_expert_gate.weight";
    ops::scale_(moe->shared_expert->fc2.value, output_scale);
  }
}

Tensor TransformerLayer::forward(const Tensor& x, TransformerLayerContext& ctx,
                                 const LayerDropout& dropout) {
  const TraceRange range("layer");
  check_dim(x, 3, "TransformerLayer::forward", "x");
  ctx.dropout = dropout;
  if (graphs_on_ && has_graphs()) return graphed_forward(x, ctx);
  return mlp_block_forward(attention_block_forward(x, ctx), ctx);
}

Tensor TransformerLayer::attention_block_forward(const Tensor& x, TransformerLayerContext& ctx) {
  const LayerDropout& dropout = ctx.dropout;
  const ops::DropoutArgs probs = dropout.args(layer_, ops::DropoutSite::attention_probs);
  // h = x + drop(attention(norm1(x)))
  const Tensor normed_x = input_layernorm.forward(x, ctx.input_norm);
  Tensor h = mla_attention ? mla_attention->forward(normed_x, ctx.mla_attention, probs)
                           : self_attention.forward(normed_x, ctx.attention, probs);
  dropout.apply_(h, layer_, ops::DropoutSite::attention_output);
  ops::add_(h, x);
  return h;
}

Tensor TransformerLayer::mlp_block_forward(const Tensor& h, TransformerLayerContext& ctx) {
  const LayerDropout& dropout = ctx.dropout;
  const bool recompute = ctx.recompute;
  if (moe) ctx.moe.router.recompute = recompute;
  // out = h + drop(mlp(norm2(h)))
  const Tensor normed = post_attention_layernorm.forward(h, ctx.post_attention_norm);
  Tensor out = moe ? moe->forward(normed, ctx.moe) : mlp->forward(normed, ctx.mlp);
  if (recompute_mlp_block_ && !recompute) {
    // Selective recomputation: the block's input alone stays (and the router's outputs).
    ctx.mlp_block_input = normed;
    if (moe) {
      ctx.moe = ctx.moe.outputs();
    } else {
      ctx.mlp = DenseMLPContext{};
    }
  }
  dropout.apply_(out, layer_, ops::DropoutSite::mlp_output);
  ops::add_(out, h);
  return out;
}

Tensor TransformerLayer::backward(const Tensor& dy, TransformerLayerContext& ctx,
                                  double loss_scale) {
  const TraceRange range("layer.bwd");
  if (graphs_on_ && has_graphs()) return graphed_backward(dy, ctx, loss_scale);
  return attention_block_backward(mlp_block_backward(dy, ctx, loss_scale), ctx);
}

Tensor TransformerLayer::mlp_block_backward(const Tensor& dy, TransformerLayerContext& ctx,
                                            double loss_scale) {
  // p = 0: dropout_backward returns its input (no copy, nothing runs).
  const Tensor d_mlp = ctx.dropout.backward(dy, layer_, ops::DropoutSite::mlp_output);
  if (ctx.mlp_block_input.defined()) {  // selective recomputation of the MoE block / dense MLP
    const TraceRange recompute_range("layer.recompute_mlp");
    const Tensor input = ctx.mlp_block_input;
    ctx.mlp_block_input = Tensor();
    if (moe) {
      ctx.moe.router.recompute = true;
      (void)moe->forward(input, ctx.moe);
    } else {
      (void)mlp->forward(input, ctx.mlp);
    }
  }
  const Tensor d_normed =
      moe ? moe->backward(d_mlp, ctx.moe, loss_scale) : mlp->backward(d_mlp, ctx.mlp);
  Tensor dh = post_attention_layernorm.backward(d_normed, ctx.post_attention_norm);
  ops::add_(dh, dy);
  return dh;
}

Tensor TransformerLayer::attention_block_backward(const Tensor& dh, TransformerLayerContext& ctx) {
  const Tensor d_attention = ctx.dropout.backward(dh, layer_, ops::DropoutSite::attention_output);
  const Tensor d_normed_x = mla_attention ? mla_attention->backward(d_attention, ctx.mla_attention)
                                          : self_attention.backward(d_attention, ctx.attention);
  Tensor dx = input_layernorm.backward(d_normed_x, ctx.input_norm);
  ops::add_(dx, dh);
  return dx;
}

TransformerLayerContext TransformerLayerContext::outputs() const {
  TransformerLayerContext kept;
  kept.moe = moe.outputs();
  kept.moe.router.recompute = true;
  kept.dropout = dropout;
  kept.recompute = true;
  return kept;
}

void TransformerLayer::set_recompute(const RecomputeConfig& config) {
  const bool selective = config.granularity == RecomputeGranularity::selective;
  recompute_mlp_block_ = selective && (moe ? config.moe : config.mlp);
  if (moe) moe->set_recompute_shared_expert(selective && config.shared_experts);
}

std::vector<Parameter*> TransformerLayer::attention_block_parameters() {
  std::vector<Parameter*> params{&input_layernorm.weight};
  for (Parameter* p : mla_attention ? mla_attention->parameters() : self_attention.parameters())
    params.push_back(p);
  return params;
}

std::vector<Parameter*> TransformerLayer::mlp_block_parameters() {
  std::vector<Parameter*> params{&post_attention_layernorm.weight};
  for (Parameter* p : moe ? moe->parameters() : mlp->parameters()) params.push_back(p);
  return params;
}

std::vector<Parameter*> TransformerLayer::parameters() {
  std::vector<Parameter*> params = attention_block_parameters();
  for (Parameter* p : mlp_block_parameters()) params.push_back(p);
  return params;
}

void TransformerLayer::zero_grad() {
  for (Parameter* p : parameters()) p->zero_grad();
}

}  // namespace moe::nn
