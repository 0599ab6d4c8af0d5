// MlaAttention on the CPU: fp64 finite-difference gradients (with and without q compression,
// latent norms and YaRN; odd sizes; B > 1); the forward against a plain fp64 recomputation from
// the formulas (HF DeepseekV2/V3Attention); parameter names, shapes and count
// (nn::attention_param_count); initialisation; a TransformerLayer with MLA and an MoE MLP
// (DeepSeek-V3 style) against finite differences; and the errors for bad configs and inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numbers>
#include <string>
#include <vector>

#include "moe/nn/model_zoo.h"
#include "moe/nn/param_count.h"
#include "moe/nn/transformer_layer.h"
#include "nn/gradient_check.h"
#include "nn/mla_test_util.h"

namespace moe {
namespace {

using nn::MlaAttention;
using nn::ModelConfig;

struct Variant {
  const char* name;
  int64_t S, B;
  std::function<void(ModelConfig&)> apply;
};

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"q_lora_norms_interleaved_yarn", 5, 2, [](ModelConfig&) {}},
      {"plain_q_proj_half_rope", 4, 3,
       [](ModelConfig& c) {
         c.mla.q_lora_rank = 0;
         c.rotary_style = nn::RotaryStyle::half;
         c.yarn.reset();
       }},
      {"no_latent_norms_yarn_without_mscale_all_dim", 3, 2,
       [](ModelConfig& c) {
         c.qk_layernorm = false;
         c.yarn->mscale_all_dim = 0.0;
         c.mla.qk_pos_emb_head_dim = 2;
       }},
      {"odd_sizes_one_sequence", 7, 1,
       [](ModelConfig& c) {
         c.hidden_size = 13;
         c.num_attention_heads = 5;
         c.num_query_groups = 0;
         c.mla = nn::MlaConfig{.q_lora_rank = 3,
                               .kv_lora_rank = 2,
                               .qk_head_dim = 1,
                               .qk_pos_emb_head_dim = 6,
                               .v_head_dim = 1};
       }},
  };
  return v;
}

ModelConfig variant_config(const Variant& v) {
  ModelConfig c = test::small_mla_config();
  v.apply(c);
  return c;
}

class MlaAttentionGradient : public ::testing::TestWithParam<size_t> {};

TEST_P(MlaAttentionGradient, MatchesFiniteDifferences) {
  const Variant& variant = variants()[GetParam()];
  SCOPED_TRACE(variant.name);
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const ModelConfig config = variant_config(variant);
  MlaAttention m(config, 1, "self_attn.", DType::f64, Device::cpu(), seed);
  test::randomize_latent_norms(m, seed + 10);
  Tensor x = test::random_normal({variant.S, variant.B, config.hidden_size}, DType::f64, seed + 1);
  const Tensor weights = test::random_normal(x.shape(), DType::f64, seed + 2);
  auto objective = [&] {
    nn::MlaAttentionContext ctx;
    return test::dot(m.forward(x, ctx), weights);
  };

  m.zero_grad();
  nn::MlaAttentionContext ctx;
  m.forward(x, ctx);
  const Tensor dx = m.backward(weights, ctx);
  EXPECT_TRUE(test::close(dx, test::numerical_gradient(objective, x), test::kGradCheckTol, "dx"));
  test::expect_parameter_gradients(objective, m.parameters());
}

INSTANTIATE_TEST_SUITE_P(Variants, MlaAttentionGradient, ::testing::Range<size_t>(0, 4),
                         [](const auto& info) { return std::string(variants()[info.param].name); });

// ---- a plain recomputation from the formulas -------------------------------------------------

// y = W v for W [out, in] row-major.
std::vector<double> matvec(const std::vector<double>& w, const std::vector<double>& v,
                           int64_t out) {
  const auto in = static_cast<int64_t>(v.size());
  std::vector<double> y(static_cast<size_t>(out), 0.0);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) y[o] += w[o * in + i] * v[i];
  return y;
}

std::vector<double> rms_norm(const std::vector<double>& v, const std::vector<double>& w,
                             double eps) {
  double ms = 0;
  for (double a : v) ms += a * a;
  const double r = 1.0 / std::sqrt(ms / static_cast<double>(v.size()) + eps);
  std::vector<double> y(v.size());
  for (size_t i = 0; i < v.size(); ++i) y[i] = v[i] * r * w[i];
  return y;
}

double mscale_of(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

// The rotary inverse frequencies and the cos/sin factor: plain RoPE, or YaRN as in HF's
// _compute_yarn_parameters (truncated correction range).
std::vector<double> inv_frequencies(const ModelConfig& c, double& cos_sin_factor) {
  const int64_t dr = c.mla.qk_pos_emb_head_dim;
  const double theta = c.rotary_base;
  std::vector<double> f(static_cast<size_t>(dr / 2));
  cos_sin_factor = 1.0;
  for (int64_t i = 0; i < dr / 2; ++i) f[i] = std::pow(theta, -2.0 * i / dr);
  if (!c.yarn) return f;
  const nn::YarnConfig& y = *c.yarn;
  auto corr = [&](double rotations) {
    return dr * std::log(y.original_max_position_embeddings / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(theta));
  };
  double low = std::max(std::floor(corr(y.beta_fast)), 0.0);
  double high = std::min(std::ceil(corr(y.beta_slow)), static_cast<double>(dr - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < dr / 2; ++i) {
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    const double extrapolation_weight = 1 - ramp;
    f[i] = f[i] / y.factor * (1 - extrapolation_weight) + f[i] * extrapolation_weight;
  }
  cos_sin_factor = y.mscale != 0 && y.mscale_all_dim != 0
                       ? mscale_of(y.factor, y.mscale) / mscale_of(y.factor, y.mscale_all_dim)
                       : mscale_of(y.factor, 1.0);
  return f;
}

// Rotates the dr features starting at `at` of `v` by position p: DeepSeek's adjacent pairs
// (2i, 2i+1) rotated in place (HF V2's complex multiplication), or rotate_half pairs (i, i+dr/2).
void rotate(std::vector<double>& v, int64_t at, int64_t dr, int64_t p,
            const std::vector<double>& inv_freq, double factor, bool interleaved) {
  for (int64_t i = 0; i < dr / 2; ++i) {
    const int64_t a = at + (interleaved ? 2 * i : i);
    const int64_t b = at + (interleaved ? 2 * i + 1 : i + dr / 2);
    const double c = std::cos(p * inv_freq[i]) * factor, s = std::sin(p * inv_freq[i]) * factor;
    const double va = v[a], vb = v[b];
    v[a] = va * c - vb * s;
    v[b] = vb * c + va * s;
  }
}

// HF DeepseekV2/V3Attention's forward in fp64 for x [S, B, H]; returns y [S, B, H] flattened.
std::vector<double> reference_mla(const ModelConfig& c, MlaAttention& m, const Tensor& x) {
  const int64_t S = x.size(0), B = x.size(1), H = c.hidden_size, Hq = c.num_attention_heads;
  const int64_t ql = c.mla.q_lora_rank, kvl = c.mla.kv_lora_rank, dn = c.mla.qk_head_dim;
  const int64_t dr = c.mla.qk_pos_emb_head_dim, dv = c.mla.v_head_dim, dqk = dn + dr;
  const bool interleaved = c.rotary_style == nn::RotaryStyle::interleaved;
  const double eps = 1e-6;
  double factor = 1;
  const std::vector<double> inv_freq = inv_frequencies(c, factor);
  double scale = 1.0 / std::sqrt(static_cast<double>(dqk));
  if (c.yarn && c.yarn->mscale_all_dim != 0) {
    const double ms = mscale_of(c.yarn->factor, c.yarn->mscale_all_dim);
    scale *= ms * ms;
  }
  const std::vector<double> xs = x.to_double_vector();
  auto value = [](const nn::Parameter& p) { return p.value.to_double_vector(); };

  // Per token (s, b): q [Hq][dqk], k [Hq][dqk], v [Hq][dv].
  std::vector<std::vector<double>> q(S * B), k(S * B), v(S * B);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t t = s * B + b;
      const std::vector<double> xt(xs.begin() + t * H, xs.begin() + (t + 1) * H);
      std::vector<double> qt;
      if (ql > 0) {
        std::vector<double> cq = matvec(value(m.q_a_proj), xt, ql);
        if (c.qk_layernorm) cq = rms_norm(cq, value(m.q_a_layernorm->weight), eps);
        qt = matvec(value(m.q_b_proj), cq, Hq * dqk);
      } else {
        qt = matvec(value(m.q_proj), xt, Hq * dqk);
      }
      for (int64_t h = 0; h < Hq; ++h)
        rotate(qt, h * dqk + dn, dr, s, inv_freq, factor, interleaved);
      const std::vector<double> ckv = matvec(value(m.kv_a_proj_with_mqa), xt, kvl + dr);
      std::vector<double> latent(ckv.begin(), ckv.begin() + kvl);
      std::vector<double> k_pe(ckv.begin() + kvl, ckv.end());
      if (c.qk_layernorm) latent = rms_norm(latent, value(m.kv_a_layernorm->weight), eps);
      rotate(k_pe, 0, dr, s, inv_freq, factor, interleaved);
      const std::vector<double> kv = matvec(value(m.kv_b_proj), latent, Hq * (dn + dv));
      std::vector<double> kt(Hq * dqk), vt(Hq * dv);
      for (int64_t h = 0; h < Hq; ++h) {
        for (int64_t j = 0; j < dn; ++j) kt[h * dqk + j] = kv[h * (dn + dv) + j];
        for (int64_t j = 0; j < dr; ++j) kt[h * dqk + dn + j] = k_pe[j];
        for (int64_t j = 0; j < dv; ++j) vt[h * dv + j] = kv[h * (dn + dv) + dn + j];
      }
      q[t] = qt;
      k[t] = kt;
      v[t] = vt;
    }

  // Causal softmax attention per sequence and head, then o_proj.
  const std::vector<double> wo = value(m.o_proj);
  std::vector<double> y(S * B * H, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i) {
      std::vector<double> o(Hq * dv, 0.0);
      for (int64_t h = 0; h < Hq; ++h) {
        std::vector<double> score(i + 1);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0;
          for (int64_t e = 0; e < dqk; ++e)
            d += q[i * B + b][h * dqk + e] * k[j * B + b][h * dqk + e];
          score[j] = scale * d;
          mx = std::max(mx, score[j]);
        }
        double z = 0;
        for (int64_t j = 0; j <= i; ++j) z += std::exp(score[j] - mx);
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t e = 0; e < dv; ++e)
            o[h * dv + e] += std::exp(score[j] - mx) / z * v[j * B + b][h * dv + e];
      }
      const std::vector<double> yt = matvec(wo, o, H);
      std::copy(yt.begin(), yt.end(), y.begin() + (i * B + b) * H);
    }
  return y;
}

TEST(MlaAttention, ForwardMatchesPlainRecomputation) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const Variant& variant : variants()) {
    SCOPED_TRACE(variant.name);
    const ModelConfig config = variant_config(variant);
    MlaAttention m(config, 0, "", DType::f64, Device::cpu(), seed);
    test::randomize_latent_norms(m, seed + 10);
    // Long enough for YaRN's interpolated frequencies to matter.
    const Tensor x = test::random_normal({9, variant.B, config.hidden_size}, DType::f64, seed + 1);
    nn::MlaAttentionContext ctx;
    const Tensor y = m.forward(x, ctx);
    const std::vector<double> expected = reference_mla(config, m, x);
    EXPECT_TRUE(test::close(y, Tensor::from_vector(expected, y.shape()), 1e-12, "y"));
  }
}

// The softmax scale and the cos/sin factor are YaRN's, per HF: (dn + dr)^-0.5 mscale(all_dim)^2
// and mscale(mscale) / mscale(mscale_all_dim).
TEST(MlaAttention, YarnScales) {
  ModelConfig config = test::small_mla_config();
  const double base = 1.0 / std::sqrt(3.0 + 4.0);
  const double all_dim = 0.1 * 0.6 * std::log(4.0) + 1.0, mscale = 0.1 * 0.9 * std::log(4.0) + 1.0;
  MlaAttention m(config, 0, "", DType::f64, Device::cpu(), 1);
  EXPECT_NEAR(m.softmax_scale(), base * all_dim * all_dim, 1e-15);
  EXPECT_NEAR(m.rotary_attention_scale(), mscale / all_dim, 1e-15);
  config.yarn.reset();
  MlaAttention plain(config, 0, "", DType::f64, Device::cpu(), 1);
  EXPECT_NEAR(plain.softmax_scale(), base, 1e-15);
  EXPECT_EQ(plain.rotary_attention_scale(), 1.0);
}

// A query at position 0 attends to itself only, so its output is o_proj(v of its own token):
// a check of the causal mask and of the kv_b_proj value split that does not use softmax.
TEST(MlaAttention, FirstTokenReadsItsOwnValue) {
  const ModelConfig config = test::small_mla_config();
  MlaAttention m(config, 0, "", DType::f64, Device::cpu(), 3);
  const Tensor x = test::random_normal({4, 2, config.hidden_size}, DType::f64, 4);
  nn::MlaAttentionContext ctx;
  const Tensor y = m.forward(x, ctx);
  const std::vector<double> v = ctx.v.to_double_vector(), o = ctx.out.to_double_vector();
  // out[0, b] == v[0, b] for every head.
  const int64_t n = 2 * config.num_attention_heads * config.mla.v_head_dim;
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(o[i], v[i], 1e-14);
}

// ---- parameters ----------------------------------------------------------------------------

int64_t numel_of(MlaAttention& m) {
  int64_t n = 0;
  for (nn::Parameter* p : m.parameters()) n += p->value.numel();
  return n;
}

TEST(MlaAttention, ParameterNamesShapesAndCount) {
  const ModelConfig config = test::small_mla_config();
  MlaAttention m(config, 2, "model.layers.2.self_attn.", DType::f32, Device::cpu(), 5);
  std::map<std::string, Shape> shapes;
  for (nn::Parameter* p : m.parameters()) {
    shapes[p->name] = p->value.shape();
    EXPECT_EQ(p->grad.shape(), p->value.shape()) << p->name;
  }
  const std::string pre = "model.layers.2.self_attn.";
  const std::map<std::string, Shape> expected = {
      {pre + "q_a_proj.weight", {7, 11}},    {pre + "q_a_layernorm.weight", {7}},
      {pre + "q_b_proj.weight", {3 * 7, 7}}, {pre + "kv_a_proj_with_mqa.weight", {5 + 4, 11}},
      {pre + "kv_a_layernorm.weight", {5}},  {pre + "kv_b_proj.weight", {3 * (3 + 5), 5}},
      {pre + "o_proj.weight", {11, 3 * 5}},
  };
  EXPECT_EQ(shapes, expected);
  EXPECT_EQ(numel_of(m), nn::attention_param_count(config));

  ModelConfig plain = config;
  plain.mla.q_lora_rank = 0;
  MlaAttention mp(plain, 0, "a.", DType::f32, Device::cpu(), 5);
  EXPECT_EQ(mp.parameters().front()->name, "a.q_proj.weight");
  EXPECT_EQ(mp.q_proj.value.shape(), (Shape{3 * 7, 11}));
  EXPECT_EQ(numel_of(mp), nn::attention_param_count(plain));
}

TEST(MlaAttention, ParameterCountMatchesParamCountForEveryVariantAndZooModel) {
  for (const Variant& variant : variants()) {
    SCOPED_TRACE(variant.name);
    const ModelConfig config = variant_config(variant);
    MlaAttention m(config, 0, "", DType::f32, Device::cpu(), 1);
    EXPECT_EQ(numel_of(m), nn::attention_param_count(config));
    EXPECT_EQ(m.q_a_layernorm.has_value(), config.qk_layernorm && config.mla.q_lora_rank > 0);
    EXPECT_EQ(m.kv_a_layernorm.has_value(), config.qk_layernorm);
  }
  for (const char* name : {"deepseek-v2-tiny", "deepseek-v3-tiny"}) {
    SCOPED_TRACE(name);
    const ModelConfig config = nn::model_zoo(name);
    MlaAttention m(config, 0, "", DType::f32, Device::cpu(), 1);
    EXPECT_EQ(numel_of(m), nn::attention_param_count(config));
  }
}

// Projections ~ normal(0, std), o_proj ~ normal(0, std / sqrt(2 L)), norms ones; every tensor
// draws its own values; the same seed gives the same parameters.
TEST(MlaAttention, Initialisation) {
  ModelConfig config = test::small_mla_config();
  config.hidden_size = 64;
  config.num_attention_heads = 8;
  config.mla = nn::MlaConfig{.q_lora_rank = 48,
                             .kv_lora_rank = 32,
                             .qk_head_dim = 16,
                             .qk_pos_emb_head_dim = 8,
                             .v_head_dim = 16};
  config.num_query_groups = 8;
  config.init_method_std = 0.02;
  config.num_layers = 8;
  MlaAttention m(config, 1, "", DType::f32, Device::cpu(), 7);
  auto sample_std = [](const Tensor& t) {
    double s = 0;
    const std::vector<double> v = t.to_double_vector();
    for (double a : v) s += a * a;
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  for (nn::Parameter* p : {&m.q_a_proj, &m.q_b_proj, &m.kv_a_proj_with_mqa, &m.kv_b_proj})
    EXPECT_NEAR(sample_std(p->value), 0.02, 0.1 * 0.02) << p->name;
  const double out_std = 0.02 / std::sqrt(16.0);
  EXPECT_NEAR(sample_std(m.o_proj.value), out_std, 0.1 * out_std);
  EXPECT_TRUE(test::equal(m.q_a_layernorm->weight.value, Tensor::full({48}, 1.0, DType::f32)));
  EXPECT_TRUE(test::equal(m.kv_a_layernorm->weight.value, Tensor::full({32}, 1.0, DType::f32)));
  EXPECT_GT(test::relative_error(m.q_b_proj.value.reshape({-1}).rows(0, 1024),
                                 m.kv_b_proj.value.reshape({-1}).rows(0, 1024)),
            0.5);
  MlaAttention again(config, 1, "", DType::f32, Device::cpu(), 7);
  EXPECT_TRUE(test::equal(again.kv_b_proj.value, m.kv_b_proj.value));
}

// Gradients accumulate over backwards; zero_grad forgets them.
TEST(MlaAttention, GradientsAccumulate) {
  const ModelConfig config = test::small_mla_config();
  MlaAttention m(config, 0, "", DType::f64, Device::cpu(), 11);
  const Tensor x = test::random_normal({3, 2, config.hidden_size}, DType::f64, 12);
  const Tensor dy = test::random_normal(x.shape(), DType::f64, 13);
  auto step = [&] {
    nn::MlaAttentionContext ctx;
    m.forward(x, ctx);
    m.backward(dy, ctx);
  };
  m.zero_grad();
  step();
  std::vector<Tensor> once;
  for (nn::Parameter* p : m.parameters()) once.push_back(p->grad_value().clone());
  step();
  const auto params = m.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor twice = once[i].clone();
    ops::scale_(twice, 2.0);
    EXPECT_TRUE(test::close(params[i]->grad_value(), twice, 1e-12, params[i]->name));
  }
  m.zero_grad();
  step();
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_TRUE(test::close(params[i]->grad_value(), once[i], 1e-12, params[i]->name));
}

TEST(MlaAttention, EmptySequence) {
  const ModelConfig config = test::small_mla_config();
  MlaAttention m(config, 0, "", DType::f32, Device::cpu(), 1);
  const Tensor x = Tensor::zeros({0, 2, config.hidden_size}, DType::f32);
  nn::MlaAttentionContext ctx;
  EXPECT_EQ(m.forward(x, ctx).shape(), x.shape());
  m.zero_grad();
  EXPECT_EQ(m.backward(x, ctx).shape(), x.shape());
  for (nn::Parameter* p : m.parameters())
    EXPECT_EQ(
        test::relative_error(p->grad_value(), Tensor::zeros(p->grad.shape(), p->grad.dtype())), 0.0)
        << p->name;
}

TEST(MlaAttention, Errors) {
  const ModelConfig good = test::small_mla_config();
  auto build = [](const ModelConfig& c) { MlaAttention(c, 0, "", DType::f64, Device::cpu(), 1); };
  auto with = [&](const std::function<void(ModelConfig&)>& edit) {
    ModelConfig c = good;
    edit(c);
    return c;
  };
  EXPECT_THROW(build(with([](ModelConfig& c) { c.attention_type = nn::AttentionType::gqa; })),
               Error);
  EXPECT_THROW(build(with([](ModelConfig& c) { c.num_query_groups = 1; })), Error);
  EXPECT_THROW(build(with([](ModelConfig& c) { c.mla.qk_pos_emb_head_dim = 3; })), Error);
  EXPECT_THROW(build(with([](ModelConfig& c) { c.mla.kv_lora_rank = 0; })), Error);
  EXPECT_THROW(build(with([](ModelConfig& c) { c.mla.q_lora_rank = -1; })), Error);
  EXPECT_THROW(build(with([](ModelConfig& c) { c.mla.qk_head_dim = 0; })), Error);
  EXPECT_THROW(build(with([](ModelConfig& c) { c.mla.v_head_dim = 0; })), Error);
  EXPECT_THROW(build(with([](ModelConfig& c) { c.rotary_percent = 0.5; })), Error);
  EXPECT_THROW(build(with([](ModelConfig& c) { c.add_qkv_bias = true; })), Error);
  try {
    build(with([](ModelConfig& c) { c.num_query_groups = 1; }));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--num-query-groups"), std::string::npos) << e.what();
  }

  MlaAttention m(good, 0, "", DType::f64, Device::cpu(), 1);
  nn::MlaAttentionContext ctx;
  EXPECT_THROW(m.backward(Tensor::zeros({2, 1, good.hidden_size}, DType::f64), ctx), Error);
  EXPECT_THROW(m.forward(Tensor::zeros({2, 1, good.hidden_size + 1}, DType::f64), ctx), Error);
  EXPECT_THROW(m.forward(Tensor::zeros({2, good.hidden_size}, DType::f64), ctx), Error);
  EXPECT_THROW(m.forward(Tensor::zeros({2, 1, good.hidden_size}, DType::f32), ctx), Error);
  m.forward(Tensor::zeros({2, 1, good.hidden_size}, DType::f64), ctx);
  EXPECT_THROW(m.backward(Tensor::zeros({3, 1, good.hidden_size}, DType::f64), ctx), Error);
}

// ---- TransformerLayer with MLA ----------------------------------------------------------------

// A DeepSeek-V3-style layer shrunk for finite differences: MLA (q compression, latent norms,
// interleaved rotary, YaRN) and an MoE MLP with group-limited sigmoid top-k, expert bias, a
// scaling factor, a shared expert and the sequence aux loss.
ModelConfig deepseek_style_layer_config() {
  ModelConfig c = test::small_mla_config();
  c.hidden_size = 8;
  c.num_attention_heads = 2;
  c.num_query_groups = 2;
  c.mla = nn::MlaConfig{.q_lora_rank = 6,
                        .kv_lora_rank = 4,
                        .qk_head_dim = 2,
                        .qk_pos_emb_head_dim = 2,
                        .v_head_dim = 3};
  c.moe_layer_pattern = {0, 1};
  c.moe.hidden_size = c.hidden_size;
  c.moe.num_experts = 8;
  c.moe.moe_ffn_hidden_size = 3;
  c.moe.moe_shared_expert_intermediate_size = 5;
  c.moe.moe_router_topk = 2;
  c.moe.moe_router_score_function = ops::ScoreFunction::sigmoid;
  c.moe.moe_router_num_groups = 4;
  c.moe.moe_router_group_topk = 2;
  c.moe.moe_router_topk_scaling_factor = 2.5;
  c.moe.moe_router_enable_expert_bias = true;
  c.moe.moe_router_load_balancing_type = nn::LoadBalancingType::seq_aux_loss;
  c.moe.moe_aux_loss_coeff = 1e-2;
  c.moe.moe_router_dtype = nn::RouterDType::fp64;
  return c;
}

TEST(TransformerLayerMla, MoELayerMatchesFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t layer_index : {0, 1}) {  // dense MLP, then MoE
    SCOPED_TRACE(layer_index);
    const ModelConfig config = deepseek_style_layer_config();
    config.validate();
    nn::TransformerLayer layer(config, layer_index, DType::f64, Device::cpu(), seed);
    ASSERT_TRUE(layer.is_mla());
    ASSERT_EQ(layer.is_moe(), layer_index == 1);
    test::randomize_latent_norms(*layer.mla_attention, seed + 20);
    if (layer.moe)
      layer.moe->router.expert_bias.copy_(
          test::random_normal({config.moe.num_experts}, DType::f32, seed + 30, Device::cpu(), 0.3));
    Tensor x = test::random_normal({4, 2, config.hidden_size}, DType::f64, seed + 1);
    const Tensor weights = test::random_normal(x.shape(), DType::f64, seed + 2);
    auto objective = [&] {
      nn::TransformerLayerContext ctx;
      double loss = test::dot(layer.forward(x, ctx), weights);
      if (ctx.moe.router.aux_loss.defined()) loss += ctx.moe.router.aux_loss.item();
      if (ctx.moe.router.z_loss.defined()) loss += ctx.moe.router.z_loss.item();
      return loss;
    };
    layer.zero_grad();
    nn::TransformerLayerContext ctx;
    layer.forward(x, ctx);
    if (layer.moe) {
      EXPECT_TRUE(ctx.moe.router.aux_loss.defined());
    }
    const Tensor dx = layer.backward(weights, ctx);
    EXPECT_TRUE(test::close(dx, test::numerical_gradient(objective, x), test::kGradCheckTol, "dx"));
    test::expect_parameter_gradients(objective, layer.parameters());
  }
}

// The layer's parameters are the agreed HF names, and the attention ones are the MLA module's.
TEST(TransformerLayerMla, ParameterNames) {
  const ModelConfig config = nn::model_zoo("deepseek-v3-tiny");
  nn::TransformerLayer layer(config, 3, DType::f32, Device::cpu(), 1);
  ASSERT_TRUE(layer.is_mla());
  std::vector<std::string> names;
  for (nn::Parameter* p : layer.parameters()) names.push_back(p->name);
  const std::string pre = "model.layers.3.";
  for (const char* n :
       {"input_layernorm.weight", "self_attn.q_a_proj.weight", "self_attn.q_a_layernorm.weight",
        "self_attn.q_b_proj.weight", "self_attn.kv_a_proj_with_mqa.weight",
        "self_attn.kv_a_layernorm.weight", "self_attn.kv_b_proj.weight", "self_attn.o_proj.weight",
        "post_attention_layernorm.weight", "mlp.gate.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), pre + n), names.end()) << n;
  EXPECT_EQ(std::find(names.begin(), names.end(), pre + "self_attn.q_proj.weight"), names.end());
  int64_t attention = 0;
  for (nn::Parameter* p : layer.mla_attention->parameters()) attention += p->value.numel();
  EXPECT_EQ(attention, nn::attention_param_count(config));

  // A GQA config still builds self_attention and no MLA block.
  ModelConfig gqa = nn::model_zoo("deepseek-v3-tiny");
  gqa.attention_type = nn::AttentionType::gqa;
  gqa.qk_layernorm = false;
  gqa.kv_channels = 8;
  nn::TransformerLayer g(gqa, 0, DType::f32, Device::cpu(), 1);
  EXPECT_FALSE(g.is_mla());
  EXPECT_EQ(g.self_attention.q_proj.name, "model.layers.0.self_attn.q_proj.weight");
}

// Every layer of the tiny DeepSeek zoo models (MLA with YaRN; dense and MoE MLPs) runs forward
// and backward with finite results.
TEST(TransformerLayerMla, ZooTinyModelsRun) {
  for (const char* name : {"deepseek-v2-tiny", "deepseek-v3-tiny"}) {
    SCOPED_TRACE(name);
    const ModelConfig config = nn::model_zoo(name);
    for (int64_t l = 0; l < config.num_layers; ++l) {
      SCOPED_TRACE(l);
      nn::TransformerLayer layer(config, l, DType::f32, Device::cpu(), 3);
      ASSERT_TRUE(layer.is_mla());
      const Tensor x = test::random_normal({6, 2, config.hidden_size}, DType::f32, 4 + l);
      nn::TransformerLayerContext ctx;
      const Tensor y = layer.forward(x, ctx);
      layer.zero_grad();
      const Tensor dx = layer.backward(test::random_normal(x.shape(), DType::f32, 9), ctx);
      for (const Tensor* t : {&y, &dx}) {
        ASSERT_EQ(t->shape(), x.shape());
        for (double v : t->to_double_vector()) ASSERT_TRUE(std::isfinite(v));
      }
    }
  }
}

}  // namespace
}  // namespace moe
