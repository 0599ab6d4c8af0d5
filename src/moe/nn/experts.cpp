#include "moe/nn/experts.h"

#include <cstring>

#include "moe/core/rng.h"
#include "moe/ops/gemm.h"
#include "moe/ops/grouped_gemm.h"
#include "moe/ops/swiglu.h"

namespace moe::nn {
namespace {
constexpr uint64_t kFc1Salt = 0x46'43'31ULL;  // "FC1"
constexpr uint64_t kFc2Salt = 0x46'43'32ULL;  // "FC2"

// Expert e of a [E, rows, cols] tensor as a [rows, cols] view.
Tensor expert_slice(const Tensor& w, int64_t e) {
  return w.rows(e, 1).reshape({w.size(1), w.size(2)});
}
}  // namespace

Experts::Experts(const MoEConfig& config, Device device, int ep_rank, int etp_rank)
    : config_(config), ep_rank_(ep_rank), etp_rank_(etp_rank) {
  config_.validate();
  const int64_t El = config_.num_local_experts(), Fl = config_.local_ffn_size();
  const int64_t H = config_.hidden_size, F = config_.moe_ffn_hidden_size;
  fc1 = Parameter::make("experts.fc1", {El, 2 * Fl, H}, config_.params_dtype, device);
  fc2 = Parameter::make("experts.fc2", {El, H, Fl}, config_.params_dtype, device);
  // Where these shards sit in the global [E, 2F, H] / [E, H, F] tensors (parameter.h).
  const int64_t E = config_.num_experts, first = ep_rank_ * El, f0 = etp_rank_ * Fl;
  fc1.layout = {GradGroup::expert, {E, 2 * F, H}, {E, 2, F, H}, {first, 0, f0, 0}, {El, 2, Fl, H}};
  fc2.layout = {GradGroup::expert, {E, H, F}, {E, H, F}, {first, 0, f0}, {El, H, Fl}};
  // Initialise each shard with the values the full [E, 2F, H] / [E, H, F] tensors would hold,
  // so any EP x ETP mapping starts from the same model (counter-based RNG, docs/design.md).
  const uint64_t seed1 = config_.seed ^ kFc1Salt, seed2 = config_.seed ^ kFc2Salt;
  for (int64_t le = 0; le < El; ++le) {
    Tensor w1 = expert_slice(fc1.value, le);
    for (int64_t half = 0; half < 2; ++half) {  // gate rows, then up rows
      Tensor rows = w1.rows(half * Fl, Fl);
      fill_normal(rows, seed1, 0.0, config_.init_method_std,
                  static_cast<uint64_t>(global_fc1_row(le, half * Fl) * H));
    }
    const int64_t ge = ep_rank_ * El + le;
    Tensor w2 = expert_slice(fc2.value, le);  // [H, Fl]: row h holds columns [etp*Fl, +Fl)
    if (Fl == F) {  // unsharded: the expert is one contiguous block of the full tensor
      fill_normal(w2, seed2, 0.0, config_.init_method_std, static_cast<uint64_t>(ge * H * F));
      continue;
    }
    for (int64_t h = 0; h < H; ++h) {
      Tensor row = w2.rows(h, 1);
      fill_normal(row, seed2, 0.0, config_.init_method_std,
                  static_cast<uint64_t>((ge * H + h) * F + etp_rank_ * Fl));
    }
  }
}

int64_t Experts::global_fc1_row(int64_t local_expert, int64_t row) const {
  const int64_t El = config_.num_local_experts(), Fl = config_.local_ffn_size();
  const int64_t F = config_.moe_ffn_hidden_size;
  const int64_t ge = ep_rank_ * El + local_expert;
  const int64_t half = row / Fl, within = row % Fl;  // gate (0) or up (1) shard
  return ge * 2 * F + half * F + etp_rank_ * Fl + within;
}

void Experts::load_full(const Tensor& fc1_full, const Tensor& fc2_full) {
  const int64_t E = config_.num_experts, El = config_.num_local_experts();
  const int64_t Fl = config_.local_ffn_size(), H = config_.hidden_size,
                F = config_.moe_ffn_hidden_size;
  check_shape(fc1_full, {E, 2 * F, H}, "Experts::load_full", "fc1");
  check_shape(fc2_full, {E, H, F}, "Experts::load_full", "fc2");
  const Tensor w1 = fc1_full.to(Device::cpu()).to(fc1.value.dtype());
  const Tensor w2 = fc2_full.to(Device::cpu()).to(fc2.value.dtype());
  Tensor local1 = Tensor::empty(fc1.value.shape(), fc1.value.dtype());
  Tensor local2 = Tensor::empty(fc2.value.shape(), fc2.value.dtype());
  for (int64_t le = 0; le < El; ++le) {
    const int64_t ge = ep_rank_ * El + le;
    for (int64_t half = 0; half < 2; ++half)
      expert_slice(local1, le)
          .rows(half * Fl, Fl)
          .copy_(expert_slice(w1, ge).rows(half * F + etp_rank_ * Fl, Fl));
    const size_t elem = dtype_size(w2.dtype());
    const Tensor src = expert_slice(w2, ge);
    Tensor dst = expert_slice(local2, le);
    for (int64_t h = 0; h < H; ++h)
      std::memcpy(static_cast<char*>(dst.raw()) + (h * Fl) * elem,
                  static_cast<const char*>(src.raw()) + (h * F + etp_rank_ * Fl) * elem, Fl * elem);
  }
  fc1.value.copy_(local1);
  fc2.value.copy_(local2);
}

Tensor Experts::forward(const Tensor& x, const Tensor& probs, const Tensor& tokens_per_expert,
                        std::span<const int64_t> host_tokens_per_expert, ExpertsContext& ctx) {
  check_dim(x, 2, "Experts::forward", "x");
  MOE_CHECK(x.size(1) == config_.hidden_size, "Experts::forward: hidden size ", x.size(1),
            " != ", config_.hidden_size);
  check_shape(tokens_per_expert, {config_.num_local_experts()}, "Experts::forward",
              "tokens_per_expert");
  ctx = ExpertsContext{};
  ctx.x = x;
  ctx.probs = probs;
  ctx.tokens_per_expert = tokens_per_expert;
  ctx.host_tokens_per_expert.assign(host_tokens_per_expert.begin(), host_tokens_per_expert.end());
  if (!config_.moe_grouped_gemm) {
    if (ctx.host_tokens_per_expert.empty())  // the per-expert loop slices rows on the host
      ctx.host_tokens_per_expert = tokens_per_expert.to(DType::i64).to_vector<int64_t>();
    return forward_sequential(x, probs, ctx);
  }
  // The counts are read to the host at most once per layer call (the layer's one
  // synchronisation when the dispatcher did not have them), and not at all when every grouped
  // GEMM reads them on the device.
  const ops::GroupedGemmBackend backend = config_.moe_grouped_gemm_backend;
  const int64_t R = x.size(0), Fl = config_.local_ffn_size();
  ctx.fc1_out = Tensor::empty({R, 2 * Fl}, x.dtype(), x.device());
  ops::grouped_gemm(x, fc1.value, true, tokens_per_expert, ctx.fc1_out,
                    host_counts_for(x, fc1.value, ctx.fc1_out, ctx), backend);
  ctx.activation = ops::swiglu_forward(ctx.fc1_out, probs);
  Tensor y = Tensor::empty({R, config_.hidden_size}, x.dtype(), x.device());
  ops::grouped_gemm(ctx.activation, fc2.value, true, tokens_per_expert, y,
                    host_counts_for(ctx.activation, fc2.value, y, ctx), backend);
  return y;
}

std::span<const int64_t> Experts::host_counts_for(const Tensor& a, const Tensor& b,
                                                  const Tensor& out, ExpertsContext& ctx,
                                                  bool accumulate) const {
  if (!ops::grouped_gemm_reads_counts(config_.moe_grouped_gemm_backend, a, b, out, accumulate))
    return {};
  if (ctx.host_tokens_per_expert.empty())
    ctx.host_tokens_per_expert = ctx.tokens_per_expert.to(DType::i64).to_vector<int64_t>();
  return ctx.host_tokens_per_expert;
}

Experts::Grads Experts::backward(const Tensor& grad_y, ExpertsContext& ctx) {
  check_shape(grad_y, {ctx.x.size(0), config_.hidden_size}, "Experts::backward", "grad_y");
  if (!config_.moe_grouped_gemm) return backward_sequential(grad_y, ctx);
  const int64_t R = ctx.x.size(0), Fl = config_.local_ffn_size();
  const Tensor dy = grad_y.to(ctx.x.dtype());
  // fc2: y = h fc2^T  ->  dh = dy fc2,  dfc2 += dy^T h
  const ops::GroupedGemmBackend backend = config_.moe_grouped_gemm_backend;
  Tensor d_activation = Tensor::empty({R, Fl}, ctx.x.dtype(), ctx.x.device());
  ops::grouped_gemm(dy, fc2.value, false, ctx.tokens_per_expert, d_activation,
                    host_counts_for(dy, fc2.value, d_activation, ctx), backend);
  const bool accumulate_fc2 = fc2.take_grad_beta() != 0.0f;
  ops::grouped_gemm_wgrad(dy, ctx.activation, ctx.tokens_per_expert, fc2.grad, accumulate_fc2,
                          host_counts_for(dy, ctx.activation, fc2.grad, ctx, accumulate_fc2),
                          backend);
  ops::SwigluGrads act = ops::swiglu_backward(d_activation, ctx.fc1_out, ctx.probs);
  // fc1: h1 = x fc1^T  ->  dx = dh1 fc1,  dfc1 += dh1^T x
  Tensor dx = Tensor::empty({R, config_.hidden_size}, ctx.x.dtype(), ctx.x.device());
  ops::grouped_gemm(act.fc1_out, fc1.value, false, ctx.tokens_per_expert, dx,
                    host_counts_for(act.fc1_out, fc1.value, dx, ctx), backend);
  const bool accumulate_fc1 = fc1.take_grad_beta() != 0.0f;
  ops::grouped_gemm_wgrad(act.fc1_out, ctx.x, ctx.tokens_per_expert, fc1.grad, accumulate_fc1,
                          host_counts_for(act.fc1_out, ctx.x, fc1.grad, ctx, accumulate_fc1),
                          backend);
  return {dx, act.probs};
}

Tensor Experts::forward_sequential(const Tensor& x, const Tensor& probs, ExpertsContext& ctx) {
  const int64_t R = x.size(0), Fl = config_.local_ffn_size(), H = config_.hidden_size;
  ctx.fc1_out = Tensor::zeros({R, 2 * Fl}, x.dtype(), x.device());
  Tensor y = Tensor::zeros({R, H}, x.dtype(), x.device());
  int64_t start = 0;
  for (int64_t e = 0; e < config_.num_local_experts(); ++e) {
    const int64_t n = ctx.host_tokens_per_expert[static_cast<size_t>(e)];
    if (n > 0) {
      Tensor h1 = ctx.fc1_out.rows(start, n);
      ops::gemm(x.rows(start, n), false, expert_slice(fc1.value, e), true, h1);
    }
    start += n;
  }
  MOE_CHECK(start <= R, "Experts: tokens_per_expert sums to ", start, " > ", R, " rows");
  ctx.activation = ops::swiglu_forward(ctx.fc1_out, probs);
  start = 0;
  for (int64_t e = 0; e < config_.num_local_experts(); ++e) {
    const int64_t n = ctx.host_tokens_per_expert[static_cast<size_t>(e)];
    if (n > 0) {
      Tensor ye = y.rows(start, n);
      ops::gemm(ctx.activation.rows(start, n), false, expert_slice(fc2.value, e), true, ye);
    }
    start += n;
  }
  return y;
}

Experts::Grads Experts::backward_sequential(const Tensor& grad_y, ExpertsContext& ctx) {
  const int64_t R = ctx.x.size(0), Fl = config_.local_ffn_size(), H = config_.hidden_size;
  const Tensor dy = grad_y.to(ctx.x.dtype());
  Tensor d_activation = Tensor::zeros({R, Fl}, ctx.x.dtype(), ctx.x.device());
  // Experts without rows are skipped below: materialise a lazily zeroed gradient first.
  fc1.grad_value();
  fc2.grad_value();
  int64_t start = 0;
  for (int64_t e = 0; e < config_.num_local_experts(); ++e) {
    const int64_t n = ctx.host_tokens_per_expert[static_cast<size_t>(e)];
    if (n > 0) {
      Tensor dh = d_activation.rows(start, n);
      Tensor dw2 = expert_slice(fc2.grad, e);
      ops::gemm(dy.rows(start, n), false, expert_slice(fc2.value, e), false, dh);
      ops::gemm(dy.rows(start, n), true, ctx.activation.rows(start, n), false, dw2, 1.0f, 1.0f);
    }
    start += n;
  }
  ops::SwigluGrads act = ops::swiglu_backward(d_activation, ctx.fc1_out, ctx.probs);
  Tensor dx = Tensor::zeros({R, H}, ctx.x.dtype(), ctx.x.device());
  start = 0;
  for (int64_t e = 0; e < config_.num_local_experts(); ++e) {
    const int64_t n = ctx.host_tokens_per_expert[static_cast<size_t>(e)];
    if (n > 0) {
      Tensor dxe = dx.rows(start, n);
      Tensor dw1 = expert_slice(fc1.grad, e);
      ops::gemm(act.fc1_out.rows(start, n), false, expert_slice(fc1.value, e), false, dxe);
      ops::gemm(act.fc1_out.rows(start, n), true, ctx.x.rows(start, n), false, dw1, 1.0f, 1.0f);
    }
    start += n;
  }
  return {dx, act.probs};
}

}  // namespace moe::nn
