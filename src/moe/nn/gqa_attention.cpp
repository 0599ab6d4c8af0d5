#include "moe/nn/gqa_attention.h"

#include "moe/core/rng.h"
#include "moe/nn/param_init.h"
#include "moe/nn/rope_frequencies.h"
#include "moe/ops/gemm.h"

namespace moe::nn {
namespace {

constexpr const char* kOp = "GqaAttention";

// y [T, N] += ones [T, 1] x bias [1, N]: the bias broadcast over rows as a K = 1 GEMM.
void add_bias(Tensor& y, const Parameter& bias) {
  const int64_t T = y.size(0), N = y.size(1);
  const Tensor ones = Tensor::full({T, 1}, 1.0, y.dtype(), y.device());
  ops::gemm(ones, false, bias.value.reshape({1, N}), false, y, 1.0f, 1.0f);
}

// bias.grad [N] (+)= sum_t dy[t, :] = ones^T dy.
void accumulate_bias_grad(const Tensor& dy, Parameter& bias) {
  const int64_t T = dy.size(0), N = dy.size(1);
  const Tensor ones = Tensor::full({T, 1}, 1.0, dy.dtype(), dy.device());
  Tensor grad = bias.grad.reshape({1, N});
  ops::gemm(ones, true, dy, false, grad, 1.0f, bias.take_grad_beta());
}

// x [T, H] -> x W^T (+ b) [T, N].
Tensor project(const Tensor& x, const Parameter& weight, const Parameter* bias) {
  Tensor y = ops::matmul(x, weight.value, false, true);
  if (bias) add_bias(y, *bias);
  return y;
}

}  // namespace

GqaAttention::GqaAttention(const ModelConfig& config, int64_t layer, const std::string& prefix,
                           DType dtype, Device device, uint64_t seed, const TensorParallel& tp,
                           const ContextParallel& cp)
    : hidden_(config.hidden_size),
      heads_(config.num_attention_heads),
      groups_(config.num_query_groups > 0 ? config.num_query_groups : config.num_attention_heads),
      bias_(config.add_qkv_bias),
      tp_(tp),
      cp_(cp),
      dtype_(dtype) {
  MOE_CHECK(config.attention_type == AttentionType::gqa, kOp,
            ": an MLA config (--multi-latent-attention) belongs to MlaAttention");
  MOE_CHECK(hidden_ > 0, kOp, ": --hidden-size must be positive, got ", hidden_);
  MOE_CHECK(heads_ > 0, kOp, ": --num-attention-heads must be positive, got ", heads_);
  MOE_CHECK(groups_ > 0 && heads_ % groups_ == 0, kOp, ": --num-attention-heads ", heads_,
            " is not a multiple of --num-query-groups ", groups_);
  MOE_CHECK(config.kv_channels > 0 || hidden_ % heads_ == 0, kOp, ": --hidden-size ", hidden_,
            " is not divisible by --num-attention-heads ", heads_, " (set --kv-channels)");
  head_dim_ = config.head_dim();
  MOE_CHECK(config.rotary_percent > 0.0 && config.rotary_percent <= 1.0, kOp,
            ": --rotary-percent must be in (0, 1], got ", config.rotary_percent);
  // Megatron and HF both take int(head_dim * fraction) rotary features.
  rotary_dim_ = static_cast<int64_t>(static_cast<double>(head_dim_) * config.rotary_percent);
  MOE_CHECK(rotary_dim_ >= 2 && rotary_dim_ % 2 == 0, kOp, ": the rotary dimension int(", head_dim_,
            " * --rotary-percent ", config.rotary_percent, ") = ", rotary_dim_,
            " must be even and at least 2");

  heads_total_ = heads_;
  heads_ = tp.local(heads_, "--num-attention-heads");
  groups_ = tp.local(groups_, "--num-query-groups");
  const int64_t H = hidden_, D = head_dim_, Nq = heads_total_ * D, Nkv = groups_ * tp.size() * D;
  const double std = config.init_method_std;
  // A TP block of the global `shape` along `split_dim`, drawn where the whole tensor would be.
  auto make = [&](const char* name, const Shape& shape, int split_dim, double stddev) {
    Shape local = shape;
    local[static_cast<size_t>(split_dim)] = tp.local(shape[static_cast<size_t>(split_dim)], name);
    Parameter p = Parameter::make(prefix + name, local, dtype, device);
    set_tp_split(p, shape, shape, split_dim, tp);
    if (stddev > 0) fill_normal_box(p, parameter_seed(seed, layer, name), 0.0, stddev);
    return p;
  };
  q_proj = make("q_proj.weight", {Nq, H}, 0, std);
  k_proj = make("k_proj.weight", {Nkv, H}, 0, std);
  v_proj = make("v_proj.weight", {Nkv, H}, 0, std);
  o_proj = make("o_proj.weight", {H, Nq}, 1, output_layer_std(std, config.num_layers));
  if (bias_) {  // zeros, as Megatron initialises biases
    q_bias = make("q_proj.bias", {Nq}, 0, 0.0);
    k_bias = make("k_proj.bias", {Nkv}, 0, 0.0);
    v_bias = make("v_proj.bias", {Nkv}, 0, 0.0);
  }
  if (config.qk_layernorm) {
    q_norm.emplace(prefix + "q_norm.weight", D, config.norm_epsilon, dtype, device);
    k_norm.emplace(prefix + "k_norm.weight", D, config.norm_epsilon, dtype, device);
    set_tp_replicated(q_norm->weight, tp, /*partial_grad=*/true);
    set_tp_replicated(k_norm->weight, tp, /*partial_grad=*/true);
  }

  const ops::RotaryFrequencies freqs = rope_frequencies(config, rotary_dim_);
  inv_freq_ = ops::inv_freq_tensor(freqs, dtype == DType::f64 ? DType::f64 : DType::f32, device);
  rotary_.layout = config.rotary_style == RotaryStyle::half ? ops::RotaryLayout::half
                                                            : ops::RotaryLayout::interleaved;
  rotary_.attention_scale = freqs.attention_scale;
  attention_.causal = true;
  attention_.layout = ops::AttentionLayout::sbhd;
  attention_.deterministic = config.deterministic_mode;
}

Tensor GqaAttention::forward(const Tensor& x, AttentionContext& ctx,
                             const ops::DropoutArgs& dropout) const {
  check_dim(x, 3, kOp, "x");
  MOE_CHECK(x.size(2) == hidden_, kOp, ": x ", shape_str(x.shape()), " has hidden size ", x.size(2),
            ", expected --hidden-size ", hidden_);
  MOE_CHECK(x.dtype() == dtype_, kOp, ": x is ", x.dtype(), " but the parameters are ", dtype_);
  check_same_device(x, q_proj.value, kOp);
  ctx = AttentionContext{};
  ctx.input_shape = x.shape();
  const Tensor x_all = tp_enter_forward(x, tp_);  // the whole sequence
  const int64_t S = x_all.size(0), B = x_all.size(1), T = S * B, D = head_dim_;
  ctx.dropout = dropout;
  if (ctx.dropout.active() && tp_.active()) {  // the masks of the model's heads
    ctx.dropout.head_offset = tp_.rank() * heads_;
    ctx.dropout.heads_total = heads_total_;
  }
  const Tensor x2 = x_all.reshape({T, hidden_});
  ctx.x = tp_input_to_save(x.reshape({x.numel() / hidden_, hidden_}), x2, tp_);
  ctx.positions = positions_.get(S, B, cp_, x.device());

  Tensor q = project(x2, q_proj, bias_ ? &q_bias : nullptr).reshape({S, B, heads_, D});
  Tensor k = project(x2, k_proj, bias_ ? &k_bias : nullptr).reshape({S, B, groups_, D});
  ctx.v = project(x2, v_proj, bias_ ? &v_bias : nullptr).reshape({S, B, groups_, D});
  if (q_norm) {
    q = q_norm->forward(q, ctx.q_norm);
    k = k_norm->forward(k, ctx.k_norm);
  }
  ctx.q = ops::rotary_forward(q, inv_freq_, ctx.positions, rotary_);
  ctx.k = ops::rotary_forward(k, inv_freq_, ctx.positions, rotary_);
  ops::AttentionOutput attn =
      sequence_attention_forward(ctx.q, ctx.k, ctx.v, options_with(ctx.dropout), cp_, ctx.cp);
  ctx.out = std::move(attn.out);
  ctx.lse = std::move(attn.lse);
  const Tensor y = ops::matmul(ctx.out.reshape({T, heads_ * D}), o_proj.value, false, true);
  return tp_exit_forward(y.reshape({S, B, hidden_}), tp_);
}

Tensor GqaAttention::forward_cached(const Tensor& x, KvStep& step) const {
  check_dim(x, 3, kOp, "x");
  MOE_CHECK(x.size(2) == hidden_ && x.dtype() == dtype_, kOp, ": x ", shape_str(x.shape()), " ",
            x.dtype(), " does not fit hidden size ", hidden_, " in ", dtype_);
  MOE_CHECK(!tp_.active() && !cp_.active(), kOp,
            ": generation with a KV cache runs on one rank, not under tensor or context "
            "parallelism");
  const int64_t S = x.size(0), B = x.size(1), T = S * B, D = head_dim_;
  const Tensor x2 = x.reshape({T, hidden_});
  Tensor q = project(x2, q_proj, bias_ ? &q_bias : nullptr).reshape({S, B, heads_, D});
  Tensor k = project(x2, k_proj, bias_ ? &k_bias : nullptr).reshape({S, B, groups_, D});
  const Tensor v = project(x2, v_proj, bias_ ? &v_bias : nullptr).reshape({S, B, groups_, D});
  if (q_norm) {
    RMSNormContext q_ctx, k_ctx;
    q = q_norm->forward(q, q_ctx);
    k = k_norm->forward(k, k_ctx);
  }
  q = ops::rotary_forward(q, inv_freq_, step.positions, rotary_);
  k = ops::rotary_forward(k, inv_freq_, step.positions, rotary_);
  const Tensor out = cached_attention(q, k, v, step, attention_);
  return ops::matmul(out.reshape({T, heads_ * D}), o_proj.value, false, true)
      .reshape({S, B, hidden_});
}

Tensor GqaAttention::backward(const Tensor& dy, AttentionContext& ctx) {
  MOE_CHECK(ctx.x.defined(), kOp, ": backward without a forward");
  check_shape(dy, ctx.input_shape, "GqaAttention::backward", "dy");
  const Tensor dy_all = tp_exit_backward(dy, tp_);
  const int64_t S = dy_all.size(0), B = dy_all.size(1), T = S * B, D = head_dim_;
  const Tensor dy2 = dy_all.dtype() == dtype_ ? dy_all.reshape({T, hidden_})
                                              : dy_all.reshape({T, hidden_}).to(dtype_);
  // The projections' input, gathered again under SP while the attention's backward runs.
  PendingTensor x_all = tp_saved_input_start(ctx.x, tp_);

  // y = o Wo^T: dWo += dy^T o, do = dy Wo.
  const Tensor out2 = ctx.out.reshape({T, heads_ * D});
  ops::gemm(dy2, true, out2, false, o_proj.grad, 1.0f, o_proj.take_grad_beta());
  const Tensor d_out = ops::matmul(dy2, o_proj.value).reshape({S, B, heads_, D});

  ops::AttentionGrads g = sequence_attention_backward(d_out, ctx.q, ctx.k, ctx.v, ctx.out, ctx.lse,
                                                      ctx.cp, options_with(ctx.dropout), cp_);
  Tensor dq = ops::rotary_backward(g.q, inv_freq_, ctx.positions, rotary_);
  Tensor dk = ops::rotary_backward(g.k, inv_freq_, ctx.positions, rotary_);
  if (q_norm) {
    dq = q_norm->backward(dq, ctx.q_norm);
    dk = k_norm->backward(dk, ctx.k_norm);
  }
  const Tensor dq2 = dq.reshape({T, heads_ * D});
  const Tensor dk2 = dk.reshape({T, groups_ * D});
  const Tensor dv2 = g.v.reshape({T, groups_ * D});

  // Each projection p = x W^T + b: dx += dp W first, whose TP reduction then runs while
  // dW += dp^T x and db += sum_t dp are computed.
  Tensor dx = Tensor::empty({T, hidden_}, dtype_, dy.device());
  const std::pair<const Tensor*, Parameter*> projections[] = {
      {&dq2, &q_proj}, {&dk2, &k_proj}, {&dv2, &v_proj}};
  float dx_beta = 0.0f;
  for (const auto& [dp, weight] : projections) {
    ops::gemm(*dp, false, weight->value, false, dx, 1.0f, dx_beta);
    dx_beta = 1.0f;
  }
  PendingTensor dx_reduced = tp_enter_backward_start(dx.reshape({S, B, hidden_}), tp_);
  const Tensor x_rows = x_all.get();
  for (const auto& [dp, weight] : projections)
    ops::gemm(*dp, true, x_rows, false, weight->grad, 1.0f, weight->take_grad_beta());
  if (bias_) {
    accumulate_bias_grad(dq2, q_bias);
    accumulate_bias_grad(dk2, k_bias);
    accumulate_bias_grad(dv2, v_bias);
  }
  return dx_reduced.get();
}

std::vector<Parameter*> GqaAttention::parameters() {
  std::vector<Parameter*> params{&q_proj, &k_proj, &v_proj};
  if (bias_) params.insert(params.end(), {&q_bias, &k_bias, &v_bias});
  if (q_norm) params.insert(params.end(), {&q_norm->weight, &k_norm->weight});
  params.push_back(&o_proj);
  return params;
}

void GqaAttention::zero_grad() {
  for (Parameter* p : parameters()) p->zero_grad();
}

}  // namespace moe::nn
