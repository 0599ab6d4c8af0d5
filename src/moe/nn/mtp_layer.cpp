#include "moe/nn/mtp_layer.h"

#include <climits>
#include <string>
#include <string_view>

#include "moe/core/rng.h"
#include "moe/nn/param_init.h"
#include "moe/ops/elementwise.h"
#include "moe/ops/gemm.h"

namespace moe::nn {
namespace {

constexpr const char* kOp = "MtpLayer";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The projections that write into the residual stream (attention's o_proj, the dense MLP's,
// the experts' and the shared experts' down projections): initialised with
// output_layer_std(std, num_layers).
bool writes_residual(const std::string& name) {
  return ends_with(name, "o_proj.weight") || ends_with(name, "down_proj.weight") ||
         ends_with(name, "experts.down_proj");
}

TransformerLayer make_layer(const ModelConfig& config, int64_t depth, DType dtype, Device device,
                            uint64_t seed, const ModelGroups& groups) {
  MOE_CHECK(depth >= 0 && depth < config.mtp_num_layers, kOp, ": depth ", depth,
            " is outside [0, --mtp-num-layers ", config.mtp_num_layers, ")");
  MOE_CHECK(config.num_layers > 0, kOp, ": multi-token prediction needs --num-layers > 0");
  const ModelConfig extended = mtp_layer_config(config, depth);
  TransformerLayer layer(extended, config.num_layers + depth, dtype, device, seed, groups);
  // The layer drew its residual-writing projections for a model of extended.num_layers
  // layers; Megatron's MTP layers use the decoder's --num-layers (config.output_layer_init_method).
  const double rescale =
      output_layer_std(1.0, config.num_layers) / output_layer_std(1.0, extended.num_layers);
  for (Parameter* p : layer.parameters())
    if (writes_residual(p->name)) ops::scale_(p->value, rescale);
  return layer;
}

}  // namespace

ModelConfig mtp_layer_config(const ModelConfig& config, int64_t depth) {
  ModelConfig extended = config;
  extended.num_layers = config.num_layers + depth + 1;
  const int last_is_moe = config.is_moe_layer(config.num_layers - 1) ? 1 : 0;
  extended.moe_layer_pattern.resize(static_cast<size_t>(extended.num_layers), last_is_moe);
  extended.mtp_num_layers = 0;
  return extended;
}

MtpLayer::MtpLayer(const ModelConfig& config, int64_t depth, DType dtype, Device device,
                   uint64_t seed, const ModelGroups& groups)
    : layer(make_layer(config, depth, dtype, device, seed, groups)), hidden_(config.hidden_size) {
  const int64_t H = config.hidden_size, j = config.num_layers + depth;
  const std::string prefix = "model.layers." + std::to_string(j) + ".";
  enorm = RMSNorm(prefix + "enorm.weight", H, config.norm_epsilon, dtype, device);
  hnorm = RMSNorm(prefix + "hnorm.weight", H, config.norm_epsilon, dtype, device);
  eh_proj = Parameter::make(prefix + "eh_proj.weight", {H, 2 * H}, dtype, device);
  fill_normal(eh_proj.value, parameter_seed(seed, j, "eh_proj"), 0.0, config.init_method_std);
  final_norm = RMSNorm(prefix + "shared_head.norm.weight", H, config.norm_epsilon, dtype, device);
  // Replicated over TP; on sequence shards under sequence parallelism (partial gradients).
  const bool partial = groups.tp.sequence_parallel;
  for (Parameter* p : {&enorm.weight, &hnorm.weight, &eh_proj, &final_norm.weight})
    set_tp_replicated(*p, groups.tp, partial);
}

const ops::PermuteMap& MtpLayer::interleave_map(int64_t tokens, Device device) {
  if (interleave_.slot_to_row.defined() && interleave_.num_tokens == 2 * tokens &&
      interleave_device_ == device)
    return interleave_;
  // Slot s < T (first half) goes to row 2s, slot T + t to row 2t + 1.
  const int64_t T = tokens;
  MOE_CHECK(2 * T <= INT32_MAX, kOp, ": ", T, " tokens exceed the i32 row map");
  std::vector<int32_t> slot_to_row(static_cast<size_t>(2 * T)), row_to_slot(slot_to_row.size());
  for (int64_t t = 0; t < T; ++t) {
    slot_to_row[t] = static_cast<int32_t>(2 * t);
    slot_to_row[T + t] = static_cast<int32_t>(2 * t + 1);
    row_to_slot[2 * t] = static_cast<int32_t>(t);
    row_to_slot[2 * t + 1] = static_cast<int32_t>(T + t);
  }
  interleave_ = ops::PermuteMap{};
  interleave_.slot_to_row = Tensor::from_vector(slot_to_row, {2 * T}).to(device);
  interleave_.row_to_slot = Tensor::from_vector(row_to_slot, {2 * T}).to(device);
  interleave_.tokens_per_expert = Tensor::full({1}, static_cast<double>(2 * T), DType::i64, device);
  interleave_.num_tokens = 2 * T;
  interleave_.topk = 1;
  interleave_.num_rows = 2 * T;
  interleave_device_ = device;
  return interleave_;
}

Tensor MtpLayer::forward(const Tensor& embedding, const Tensor& prev_hidden, MtpLayerContext& ctx,
                         const LayerDropout& dropout) {
  check_defined(embedding, kOp, "embedding");
  check_dim(embedding, 3, kOp, "embedding");
  MOE_CHECK(embedding.size(2) == hidden_, kOp, ": embedding ", shape_str(embedding.shape()),
            " must end in --hidden-size ", hidden_);
  check_shape(prev_hidden, embedding.shape(), kOp, "prev_hidden");
  check_same_device(embedding, prev_hidden, kOp);
  ctx = MtpLayerContext{};
  ctx.shape = embedding.shape();
  const int64_t T = embedding.size(0) * embedding.size(1), H = hidden_;
  // Stack [enorm(e); hnorm(h_prev)] as [2T, H], then interleave the rows into [T, 2H].
  Tensor stacked = Tensor::empty({2 * T, H}, eh_proj.value.dtype(), embedding.device());
  stacked.rows(0, T).copy_(enorm.forward(embedding, ctx.enorm).reshape({T, H}));
  stacked.rows(T, T).copy_(hnorm.forward(prev_hidden, ctx.hnorm).reshape({T, H}));
  ctx.concat = ops::permute_forward(stacked, Tensor(), interleave_map(T, embedding.device()))
                   .x.reshape({T, 2 * H});
  const Tensor u = ops::matmul(ctx.concat, eh_proj.value, false, true).reshape(ctx.shape);
  const Tensor v = layer.forward(u, ctx.layer, dropout);
  return final_norm.forward(v, ctx.final_norm);
}

MtpLayerGrads MtpLayer::backward(const Tensor& dh, MtpLayerContext& ctx, double loss_scale) {
  MOE_CHECK(ctx.concat.defined(), kOp, " ", eh_proj.name, ": backward without a forward");
  check_shape(dh, ctx.shape, "MtpLayer::backward", "dh");
  const int64_t T = ctx.shape[0] * ctx.shape[1], H = hidden_;
  const Tensor dv = final_norm.backward(dh, ctx.final_norm);
  Tensor du = layer.backward(dv, ctx.layer, loss_scale).reshape({T, H});
  if (du.dtype() != eh_proj.value.dtype()) du = du.to(eh_proj.value.dtype());
  // dW_eh += du^T x;  dx = du W_eh  [T, 2H] -> rows [2T, H] -> [d enorm_out; d hnorm_out].
  ops::gemm(du, true, ctx.concat, false, eh_proj.grad, 1.0f, eh_proj.take_grad_beta());
  const Tensor dx = ops::matmul(du, eh_proj.value).reshape({2 * T, H});
  const Tensor d_stacked = ops::permute_backward(dx, Tensor(), interleave_map(T, dx.device())).x;
  MtpLayerGrads grads;
  grads.embedding = enorm.backward(d_stacked.rows(0, T).reshape(ctx.shape), ctx.enorm);
  grads.prev_hidden = hnorm.backward(d_stacked.rows(T, T).reshape(ctx.shape), ctx.hnorm);
  return grads;
}

std::vector<Parameter*> MtpLayer::parameters() {
  std::vector<Parameter*> params{&enorm.weight, &hnorm.weight, &eh_proj};
  for (Parameter* p : layer.parameters()) params.push_back(p);
  params.push_back(&final_norm.weight);
  return params;
}

}  // namespace moe::nn
