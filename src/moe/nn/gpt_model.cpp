#include "moe/nn/gpt_model.h"

#include "moe/core/rng.h"
#include "moe/nn/param_init.h"
#include "moe/ops/elementwise.h"
#include "moe/ops/embedding.h"
#include "moe/ops/gemm.h"

namespace moe::nn {
namespace {

constexpr const char* kOp = "GPTModel";

// ModelConfig::validate() checks the shapes and options; these are the model's own limits.
void check_model_config(const ModelConfig& c, DType dtype) {
  c.validate();
  MOE_CHECK(c.attention_type == AttentionType::gqa, kOp,
            ": --multi-latent-attention (MLA) is not supported yet; only grouped-query "
            "attention is implemented");
  MOE_CHECK(c.mtp_num_layers == 0, kOp, ": --mtp-num-layers ", c.mtp_num_layers,
            ": multi-token prediction is not implemented yet (use 0)");
  MOE_CHECK(dtype == DType::f64 || dtype == DType::f32 || dtype == DType::bf16, kOp,
            ": parameters must be f64, f32 or bf16, got ", dtype);
}

void check_tokens(const Tensor& t, const char* name, Device device) {
  check_defined(t, kOp, name);
  check_dim(t, 2, kOp, name);
  MOE_CHECK(t.dtype() == DType::i32 || t.dtype() == DType::i64, kOp, ": ", name,
            " must be i32 or i64, got ", t.dtype());
  MOE_CHECK(t.device() == device, kOp, ": ", name, " is on ", t.device(), " but the model is on ",
            device);
}

}  // namespace

GPTModel::GPTModel(const ModelConfig& config, DType dtype, Device device, uint64_t seed,
                   const MoEGroups& groups)
    : config_(config), dtype_(dtype), device_(device) {
  check_model_config(config_, dtype);
  const int64_t V = config_.vocab_size, H = config_.hidden_size;
  embed_tokens = Parameter::make("model.embed_tokens.weight", {V, H}, dtype, device);
  fill_normal(embed_tokens.value, parameter_seed(seed, -1, "embed_tokens"), 0.0,
              config_.init_method_std);
  layers.reserve(static_cast<size_t>(config_.num_layers));
  for (int64_t l = 0; l < config_.num_layers; ++l)
    layers.emplace_back(config_, l, dtype, device, seed, groups);
  final_norm = RMSNorm("model.norm.weight", H, config_.norm_epsilon, dtype, device);
  if (config_.untie_embeddings_and_output_weights) {
    // Megatron initialises the output layer with init_method (not the scaled output-layer one).
    lm_head = Parameter::make("lm_head.weight", {V, H}, dtype, device);
    fill_normal(lm_head.value, parameter_seed(seed, -1, "lm_head"), 0.0, config_.init_method_std);
  }
}

Tensor GPTModel::trunk(const Tensor& input_ids, GPTContext& ctx) {
  check_tokens(input_ids, "input_ids", device_);
  const int64_t S = input_ids.size(0), B = input_ids.size(1);
  ctx.tokens_shape = input_ids.shape();
  ctx.input_ids = input_ids;
  Tensor x = ops::embedding_forward(input_ids, embed_tokens.value);  // [S, B, H]
  ctx.layers.resize(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) x = layers[l].forward(x, ctx.layers[l]);
  return final_norm.forward(x, ctx.final_norm).reshape({S * B, config_.hidden_size});
}

GPTLoss GPTModel::forward(const Tensor& input_ids, const Tensor& labels, GPTContext& ctx,
                          const Tensor& loss_mask) {
  ctx = GPTContext{};
  check_tokens(labels, "labels", device_);
  check_shape(labels, input_ids.shape(), kOp, "labels");
  const int64_t T = input_ids.numel();
  ctx.labels = labels.reshape({T});
  if (loss_mask.defined()) {
    check_shape(loss_mask, input_ids.shape(), kOp, "loss_mask");
    ctx.loss_mask = loss_mask.reshape({T});
  }
  ctx.hidden = trunk(input_ids, ctx);
  ctx.cross_entropy = ops::linear_cross_entropy_forward(ctx.hidden, output_weight().value,
                                                        ctx.labels, ctx.loss_mask, cross_entropy);
  GPTLoss out;
  out.lm_loss = ctx.cross_entropy.loss;
  out.aux_loss = Tensor::zeros({}, out.lm_loss.dtype(), device_);
  for (size_t l = 0; l < layers.size(); ++l) {
    if (!layers[l].is_moe()) continue;
    const RouterContext& router = ctx.layers[l].moe.router;
    if (router.aux_loss.defined()) ops::add_(out.aux_loss, router.aux_loss);
    if (router.z_loss.defined()) ops::add_(out.aux_loss, router.z_loss);
  }
  out.loss = out.lm_loss.clone();
  ops::add_(out.loss, out.aux_loss);
  return out;
}

void GPTModel::backward(GPTContext& ctx, double loss_scale) {
  MOE_CHECK(ctx.hidden.defined(), kOp, ": backward without a forward");
  MOE_CHECK(ctx.layers.size() == layers.size(), kOp, ": the context holds ", ctx.layers.size(),
            " layers, the model ", layers.size());
  Parameter& weight = output_weight();
  // The fused cross-entropy accumulates dW (+=): materialise a lazily zeroed gradient first.
  Tensor& weight_grad = weight.grad_value();
  const Tensor dh = ops::linear_cross_entropy_backward(loss_scale, ctx.hidden, weight.value,
                                                       ctx.labels, ctx.loss_mask, ctx.cross_entropy,
                                                       weight_grad, cross_entropy);
  const int64_t S = ctx.tokens_shape[0], B = ctx.tokens_shape[1];
  Tensor dx = final_norm.backward(dh.reshape({S, B, config_.hidden_size}), ctx.final_norm);
  for (size_t l = layers.size(); l-- > 0;) dx = layers[l].backward(dx, ctx.layers[l], loss_scale);
  // With tied weights the embedding gradient already holds the output layer's part: add to it.
  const bool accumulate = embed_tokens.take_grad_beta() != 0.0f;
  ops::embedding_backward(dx, ctx.input_ids, embed_tokens.grad, accumulate);
}

Tensor GPTModel::logits(const Tensor& input_ids) {
  GPTContext ctx;
  const Tensor hidden = trunk(input_ids, ctx);
  return ops::matmul(hidden, output_weight().value, false, true)
      .reshape({input_ids.size(0), input_ids.size(1), config_.vocab_size});
}

std::vector<Parameter*> GPTModel::parameters() {
  std::vector<Parameter*> params{&embed_tokens};
  for (TransformerLayer& layer : layers)
    for (Parameter* p : layer.parameters()) params.push_back(p);
  params.push_back(&final_norm.weight);
  if (config_.untie_embeddings_and_output_weights) params.push_back(&lm_head);
  return params;
}

void GPTModel::zero_grad() {
  for (Parameter* p : parameters()) p->zero_grad();
}

void GPTModel::finish_step() {
  for (TransformerLayer& layer : layers)
    if (layer.moe) layer.moe->finish_step();
}

}  // namespace moe::nn
