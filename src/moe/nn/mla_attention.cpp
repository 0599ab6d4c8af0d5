#include "moe/nn/mla_attention.h"

#include <cmath>

#include "moe/core/rng.h"
#include "moe/nn/param_init.h"
#include "moe/nn/rope_frequencies.h"
#include "moe/ops/gemm.h"
#include "moe/ops/rope_mla.h"

namespace moe::nn {
namespace {

constexpr const char* kOp = "MlaAttention";

// HF DeepseekV2/V3Attention.scaling: (dn + dr)^-0.5, times yarn_get_mscale(factor,
// mscale_all_dim)^2 when rope_scaling is YaRN with a non-zero mscale_all_dim (yarn_apply_mscale).
double mla_softmax_scale(const ModelConfig& config) {
  const MlaConfig& m = config.mla;
  double scale = 1.0 / std::sqrt(static_cast<double>(m.qk_head_dim + m.qk_pos_emb_head_dim));
  if (config.yarn && config.yarn->mscale_all_dim != 0.0) {
    const double mscale = ops::yarn_get_mscale(config.yarn->factor, config.yarn->mscale_all_dim);
    scale *= mscale * mscale;
  }
  return scale;
}

}  // namespace

MlaAttention::MlaAttention(const ModelConfig& config, int64_t layer, const std::string& prefix,
                           DType dtype, Device device, uint64_t seed, const TensorParallel& tp,
                           const ContextParallel& cp)
    : hidden_(config.hidden_size),
      heads_(config.num_attention_heads),
      q_lora_rank_(config.mla.q_lora_rank),
      kv_lora_rank_(config.mla.kv_lora_rank),
      nope_dim_(config.mla.qk_head_dim),
      rope_dim_(config.mla.qk_pos_emb_head_dim),
      v_dim_(config.mla.v_head_dim),
      tp_(tp),
      cp_(cp),
      dtype_(dtype) {
  MOE_CHECK(config.attention_type == AttentionType::mla, kOp,
            ": the config asks for grouped-query attention (use GqaAttention), not "
            "--multi-latent-attention");
  MOE_CHECK(hidden_ > 0, kOp, ": --hidden-size must be positive, got ", hidden_);
  MOE_CHECK(heads_ > 0, kOp, ": --num-attention-heads must be positive, got ", heads_);
  MOE_CHECK(config.num_query_groups == 0 || config.num_query_groups == heads_, kOp,
            ": --num-query-groups ", config.num_query_groups, " must equal --num-attention-heads ",
            heads_,
            " under --multi-latent-attention (kv_b_proj gives every head its own keys and values)");
  MOE_CHECK(q_lora_rank_ >= 0, kOp,
            ": --q-lora-rank must not be negative (0: no q compression), got ", q_lora_rank_);
  MOE_CHECK(kv_lora_rank_ > 0, kOp, ": --kv-lora-rank must be positive, got ", kv_lora_rank_);
  MOE_CHECK(nope_dim_ > 0, kOp, ": --qk-head-dim must be positive, got ", nope_dim_);
  MOE_CHECK(rope_dim_ > 0 && rope_dim_ % 2 == 0, kOp,
            ": --qk-pos-emb-head-dim must be a positive even number (it is rotated in pairs), got ",
            rope_dim_);
  MOE_CHECK(v_dim_ > 0, kOp, ": --v-head-dim must be positive, got ", v_dim_);
  MOE_CHECK(config.rotary_percent == 1.0, kOp, ": --rotary-percent ", config.rotary_percent,
            " is for grouped-query attention; MLA rotates all --qk-pos-emb-head-dim features");
  MOE_CHECK(!config.add_qkv_bias, kOp,
            ": --add-qkv-bias applies to grouped-query attention, not to --multi-latent-attention");

  heads_total_ = heads_;
  heads_ = tp.local(heads_, "--num-attention-heads");
  const int64_t H = hidden_, qk = nope_dim_ + rope_dim_, Hq = heads_total_;
  const double std = config.init_method_std;
  // split_dim < 0: replicated over TP (partial gradients); else a TP block along it.
  auto make = [&](const char* name, const Shape& shape, int split_dim, double stddev) {
    Shape local = shape;
    if (split_dim >= 0)
      local[static_cast<size_t>(split_dim)] = tp.local(shape[static_cast<size_t>(split_dim)], name);
    Parameter p = Parameter::make(prefix + name, local, dtype, device);
    if (split_dim >= 0)
      set_tp_split(p, shape, shape, split_dim, tp);
    else
      set_tp_replicated(p, tp, /*partial_grad=*/true);
    if (stddev > 0) fill_normal_box(p, parameter_seed(seed, layer, name), 0.0, stddev);
    return p;
  };
  auto latent_norm = [&](std::optional<RMSNorm>& norm, const char* name, int64_t size) {
    norm.emplace(prefix + name, size, kMlaLatentNormEps, dtype, device);
    set_tp_replicated(norm->weight, tp, /*partial_grad=*/true);
  };
  if (q_lora_rank_ > 0) {
    q_a_proj = make("q_a_proj.weight", {q_lora_rank_, H}, -1, std);
    q_b_proj = make("q_b_proj.weight", {Hq * qk, q_lora_rank_}, 0, std);
    if (config.qk_layernorm) latent_norm(q_a_layernorm, "q_a_layernorm.weight", q_lora_rank_);
  } else {
    q_proj = make("q_proj.weight", {Hq * qk, H}, 0, std);
  }
  kv_a_proj_with_mqa = make("kv_a_proj_with_mqa.weight", {kv_lora_rank_ + rope_dim_, H}, -1, std);
  if (config.qk_layernorm) latent_norm(kv_a_layernorm, "kv_a_layernorm.weight", kv_lora_rank_);
  kv_b_proj = make("kv_b_proj.weight", {Hq * (nope_dim_ + v_dim_), kv_lora_rank_}, 0, std);
  o_proj = make("o_proj.weight", {H, Hq * v_dim_}, 1, output_layer_std(std, config.num_layers));

  const ops::RotaryFrequencies freqs = rope_frequencies(config, rope_dim_);
  inv_freq_ = ops::inv_freq_tensor(freqs, dtype == DType::f64 ? DType::f64 : DType::f32, device);
  rotary_.layout = config.rotary_style == RotaryStyle::half
                       ? ops::RotaryLayout::half
                       : ops::RotaryLayout::interleaved_to_half;
  rotary_.attention_scale = freqs.attention_scale;
  attention_.causal = true;
  attention_.layout = ops::AttentionLayout::sbhd;
  attention_.deterministic = config.deterministic_mode;
  attention_.softmax_scale = mla_softmax_scale(config);
}

Tensor MlaAttention::forward(const Tensor& x, MlaAttentionContext& ctx,
                             const ops::DropoutArgs& dropout) const {
  check_dim(x, 3, kOp, "x");
  MOE_CHECK(x.size(2) == hidden_, kOp, ": x ", shape_str(x.shape()), " has hidden size ", x.size(2),
            ", expected --hidden-size ", hidden_);
  MOE_CHECK(x.dtype() == dtype_, kOp, ": x is ", x.dtype(), " but the parameters are ", dtype_);
  check_same_device(x, kv_b_proj.value, kOp);
  ctx = MlaAttentionContext{};
  ctx.input_shape = x.shape();
  const Tensor x_all = tp_enter_forward(x, tp_);  // the whole sequence
  const int64_t S = x_all.size(0), B = x_all.size(1), T = S * B, qk = nope_dim_ + rope_dim_;
  ctx.dropout = dropout;
  if (ctx.dropout.active() && tp_.active()) {  // the masks of the model's heads
    ctx.dropout.head_offset = tp_.rank() * heads_;
    ctx.dropout.heads_total = heads_total_;
  }
  const Tensor x2 = x_all.reshape({T, hidden_});
  ctx.x = tp_input_to_save(x.reshape({x.numel() / hidden_, hidden_}), x2, tp_);
  ctx.positions = positions_.get(S, B, cp_, x.device());

  // Queries [S, B, Hq, dn + dr], the rope part (features [dn, dn + dr) of each head) rotated.
  Tensor q;
  if (q_lora_rank_ > 0) {
    const Tensor c_q = ops::matmul(x2, q_a_proj.value, false, true);
    ctx.q_latent = q_a_layernorm ? q_a_layernorm->forward(c_q, ctx.q_a_norm) : c_q;
    q = ops::matmul(ctx.q_latent, q_b_proj.value, false, true);
  } else {
    q = ops::matmul(x2, q_proj.value, false, true);
  }
  ops::RotaryArgs q_rotary = rotary_;
  q_rotary.feature_offset = nope_dim_;
  ctx.q = ops::rotary_forward(q.reshape({S, B, heads_, qk}), inv_freq_, ctx.positions, q_rotary);

  // kv_a_proj_with_mqa's two row blocks: the latent c_kv [T, kvl] and the shared k_pe [T, dr].
  const Tensor c_kv = ops::matmul(x2, kv_a_proj_with_mqa.value.rows(0, kv_lora_rank_), false, true);
  const Tensor k_pe =
      ops::matmul(x2, kv_a_proj_with_mqa.value.rows(kv_lora_rank_, rope_dim_), false, true);
  ctx.kv_latent = kv_a_layernorm ? kv_a_layernorm->forward(c_kv, ctx.kv_a_norm) : c_kv;
  const Tensor kv = ops::matmul(ctx.kv_latent, kv_b_proj.value, false, true);
  const Tensor k_pe_rotated =
      ops::rotary_forward(k_pe.reshape({S, B, 1, rope_dim_}), inv_freq_, ctx.positions, rotary_);
  ops::MlaKeyValue keys =
      ops::mla_expand_kv_forward(kv.reshape({S, B, heads_, nope_dim_ + v_dim_}),
                                 k_pe_rotated.reshape({S, B, rope_dim_}), nope_dim_);
  ctx.k = std::move(keys.k);
  ctx.v = std::move(keys.v);

  ops::AttentionOutput attn =
      sequence_attention_forward(ctx.q, ctx.k, ctx.v, options_with(ctx.dropout), cp_, ctx.cp);
  ctx.out = std::move(attn.out);
  ctx.lse = std::move(attn.lse);
  const Tensor y = ops::matmul(ctx.out.reshape({T, heads_ * v_dim_}), o_proj.value, false, true);
  return tp_exit_forward(y.reshape({S, B, hidden_}), tp_);
}

Tensor MlaAttention::forward_cached(const Tensor& x, KvStep& step) const {
  check_dim(x, 3, kOp, "x");
  MOE_CHECK(x.size(2) == hidden_ && x.dtype() == dtype_, kOp, ": x ", shape_str(x.shape()), " ",
            x.dtype(), " does not fit hidden size ", hidden_, " in ", dtype_);
  MOE_CHECK(!tp_.active() && !cp_.active(), kOp,
            ": generation with a KV cache runs on one rank, not under tensor or context "
            "parallelism");
  const int64_t S = x.size(0), B = x.size(1), T = S * B, qk = nope_dim_ + rope_dim_;
  const Tensor x2 = x.reshape({T, hidden_});
  // As forward(), with the rotary positions of the step.
  Tensor q;
  if (q_lora_rank_ > 0) {
    RMSNormContext norm;
    const Tensor c_q = ops::matmul(x2, q_a_proj.value, false, true);
    q = ops::matmul(q_a_layernorm ? q_a_layernorm->forward(c_q, norm) : c_q, q_b_proj.value, false,
                    true);
  } else {
    q = ops::matmul(x2, q_proj.value, false, true);
  }
  ops::RotaryArgs q_rotary = rotary_;
  q_rotary.feature_offset = nope_dim_;
  q = ops::rotary_forward(q.reshape({S, B, heads_, qk}), inv_freq_, step.positions, q_rotary);
  const Tensor c_kv = ops::matmul(x2, kv_a_proj_with_mqa.value.rows(0, kv_lora_rank_), false, true);
  const Tensor k_pe =
      ops::matmul(x2, kv_a_proj_with_mqa.value.rows(kv_lora_rank_, rope_dim_), false, true);
  RMSNormContext kv_norm;
  const Tensor latent = kv_a_layernorm ? kv_a_layernorm->forward(c_kv, kv_norm) : c_kv;
  const Tensor kv = ops::matmul(latent, kv_b_proj.value, false, true);
  const Tensor k_pe_rotated =
      ops::rotary_forward(k_pe.reshape({S, B, 1, rope_dim_}), inv_freq_, step.positions, rotary_);
  const ops::MlaKeyValue keys =
      ops::mla_expand_kv_forward(kv.reshape({S, B, heads_, nope_dim_ + v_dim_}),
                                 k_pe_rotated.reshape({S, B, rope_dim_}), nope_dim_);
  const Tensor out = cached_attention(q, keys.k, keys.v, step, attention_);
  return ops::matmul(out.reshape({T, heads_ * v_dim_}), o_proj.value, false, true)
      .reshape({S, B, hidden_});
}

Tensor MlaAttention::backward(const Tensor& dy, MlaAttentionContext& ctx) {
  MOE_CHECK(ctx.x.defined(), kOp, ": backward without a forward");
  check_shape(dy, ctx.input_shape, "MlaAttention::backward", "dy");
  const Tensor dy_all = tp_exit_backward(dy, tp_);
  const int64_t S = dy_all.size(0), B = dy_all.size(1), T = S * B;
  const int64_t qk = nope_dim_ + rope_dim_;
  const Tensor dy2 = dy_all.dtype() == dtype_ ? dy_all.reshape({T, hidden_})
                                              : dy_all.reshape({T, hidden_}).to(dtype_);
  // The down projections' input, gathered again under SP while the attention's backward runs.
  PendingTensor x_all = tp_saved_input_start(ctx.x, tp_);

  // y = o Wo^T: dWo += dy^T o, do = dy Wo.
  const Tensor out2 = ctx.out.reshape({T, heads_ * v_dim_});
  ops::gemm(dy2, true, out2, false, o_proj.grad, 1.0f, o_proj.take_grad_beta());
  const Tensor d_out = ops::matmul(dy2, o_proj.value).reshape({S, B, heads_, v_dim_});

  ops::AttentionGrads g = sequence_attention_backward(d_out, ctx.q, ctx.k, ctx.v, ctx.out, ctx.lse,
                                                      ctx.cp, options_with(ctx.dropout), cp_);

  // Keys and values back to kv_b_proj's output and the shared k_pe (summed over the heads).
  ops::MlaKeyValueGrads dkv = ops::mla_expand_kv_backward(g.k, g.v, nope_dim_);
  const Tensor d_k_pe = ops::rotary_backward(dkv.k_pe.reshape({S, B, 1, rope_dim_}), inv_freq_,
                                             ctx.positions, rotary_)
                            .reshape({T, rope_dim_});
  const Tensor d_kv = dkv.kv.reshape({T, heads_ * (nope_dim_ + v_dim_)});
  // kv = c_kv' Wkvb^T: dWkvb += dkv^T c_kv', d c_kv' = dkv Wkvb; then through kv_a_layernorm.
  ops::gemm(d_kv, true, ctx.kv_latent, false, kv_b_proj.grad, 1.0f, kv_b_proj.take_grad_beta());
  Tensor d_c_kv = ops::matmul(d_kv, kv_b_proj.value);
  if (kv_a_layernorm) d_c_kv = kv_a_layernorm->backward(d_c_kv, ctx.kv_a_norm);

  // Queries: undo the rotation of the rope part, then q_b_proj.
  ops::RotaryArgs q_rotary = rotary_;
  q_rotary.feature_offset = nope_dim_;
  const Tensor d_q =
      ops::rotary_backward(g.q, inv_freq_, ctx.positions, q_rotary).reshape({T, heads_ * qk});
  Tensor d_c_q = d_q;  // the gradient of the projection that reads x: q_a_proj, or q_proj
  if (q_lora_rank_ > 0) {
    ops::gemm(d_q, true, ctx.q_latent, false, q_b_proj.grad, 1.0f, q_b_proj.take_grad_beta());
    d_c_q = ops::matmul(d_q, q_b_proj.value);
    if (q_a_layernorm) d_c_q = q_a_layernorm->backward(d_c_q, ctx.q_a_norm);
  }
  Parameter& q_down = q_lora_rank_ > 0 ? q_a_proj : q_proj;

  // The input gradient of the projections that read x (kv_a_proj_with_mqa's two row blocks,
  // q_a_proj or q_proj) first: its TP reduction runs while their weight gradients are computed.
  Tensor dx = ops::matmul(d_c_kv, kv_a_proj_with_mqa.value.rows(0, kv_lora_rank_));
  ops::gemm(d_k_pe, false, kv_a_proj_with_mqa.value.rows(kv_lora_rank_, rope_dim_), false, dx, 1.0f,
            1.0f);
  ops::gemm(d_c_q, false, q_down.value, false, dx, 1.0f, 1.0f);
  PendingTensor dx_reduced = tp_enter_backward_start(dx.reshape({S, B, hidden_}), tp_);
  const Tensor x_rows = x_all.get();
  // kv_a_proj_with_mqa's row blocks share one gradient tensor and one beta.
  const float kva_beta = kv_a_proj_with_mqa.take_grad_beta();
  Tensor kva_grad_latent = kv_a_proj_with_mqa.grad.rows(0, kv_lora_rank_);
  Tensor kva_grad_rope = kv_a_proj_with_mqa.grad.rows(kv_lora_rank_, rope_dim_);
  ops::gemm(d_c_kv, true, x_rows, false, kva_grad_latent, 1.0f, kva_beta);
  ops::gemm(d_k_pe, true, x_rows, false, kva_grad_rope, 1.0f, kva_beta);
  ops::gemm(d_c_q, true, x_rows, false, q_down.grad, 1.0f, q_down.take_grad_beta());
  return dx_reduced.get();
}

std::vector<Parameter*> MlaAttention::parameters() {
  std::vector<Parameter*> params;
  if (q_lora_rank_ > 0) {
    params.push_back(&q_a_proj);
    if (q_a_layernorm) params.push_back(&q_a_layernorm->weight);
    params.push_back(&q_b_proj);
  } else {
    params.push_back(&q_proj);
  }
  params.push_back(&kv_a_proj_with_mqa);
  if (kv_a_layernorm) params.push_back(&kv_a_layernorm->weight);
  params.push_back(&kv_b_proj);
  params.push_back(&o_proj);
  return params;
}

void MlaAttention::zero_grad() {
  for (Parameter* p : parameters()) p->zero_grad();
}

}  // namespace moe::nn
