// Multi-token prediction (DeepSeek-V3, Megatron's --mtp-num-layers) in GPTModel on the CPU:
// fp64 finite-difference gradients of the whole model's loss with 1 and 2 MTP depths (MoE and
// dense MTP layers, tied and untied output, ignored labels, a loss mask); the MTP loss against
// a plain recomputation from the model's own pieces (shift, mask, concatenation order, h_0
// after the final norm); D = 0 unchanged; parameter names, counts, buffers, initialisation;
// errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "moe/nn/param_count.h"
#include "moe/ops/embedding.h"
#include "nn/gpt_test_util.h"
#include "nn/gradient_check.h"

namespace moe {
namespace {

using nn::GPTModel;
using nn::ModelConfig;

// A loss mask [S, B] f32 with weights 0, 0.5, 1 and 2 spread over the tokens.
Tensor mixed_loss_mask(int64_t S, int64_t B) {
  std::vector<float> m(static_cast<size_t>(S * B));
  const float pattern[] = {1.0f, 0.5f, 1.0f, 0.0f, 2.0f, 1.0f, 1.0f};
  for (size_t i = 0; i < m.size(); ++i) m[i] = pattern[i % 7];
  return Tensor::from_vector(m, {S, B});
}

struct MtpVariant {
  const char* name;
  int64_t depths;
  std::function<void(ModelConfig&)> apply;
};

const std::vector<MtpVariant>& mtp_variants() {
  static const std::vector<MtpVariant> v = {
      // The last decoder layer is MoE, so the MTP layer is MoE too.
      {"d1_moe_untied", 1, [](ModelConfig&) {}},
      {"d2_moe_tied_qk_norm", 2,
       [](ModelConfig& c) {
         c.untie_embeddings_and_output_weights = false;
         c.qk_layernorm = true;
       }},
      // The last decoder layer is dense: dense MTP layers; qkv bias.
      {"d2_dense_untied_qkv_bias", 2,
       [](ModelConfig& c) {
         c.moe_layer_pattern = {1, 0};
         c.add_qkv_bias = true;
         c.moe.moe_shared_expert_intermediate_size = 5;
       }},
      // DeepSeek-V3-like: MLA attention (q compression, latent norms, interleaved rotary) in
      // the decoder and the MTP layers, sigmoid routing with expert bias.
      {"d2_mla_sigmoid_tied", 2,
       [](ModelConfig& c) {
         c.attention_type = nn::AttentionType::mla;
         c.num_query_groups = c.num_attention_heads;
         c.mla = nn::MlaConfig{.q_lora_rank = 6,
                               .kv_lora_rank = 4,
                               .qk_head_dim = 2,
                               .qk_pos_emb_head_dim = 2,
                               .v_head_dim = 3};
         c.qk_layernorm = true;
         c.rotary_style = nn::RotaryStyle::interleaved;
         c.untie_embeddings_and_output_weights = false;
         c.moe.moe_router_score_function = ops::ScoreFunction::sigmoid;
         c.moe.moe_router_enable_expert_bias = true;
         // The q path of a tiny MLA layer has small gradients (nearly uniform attention):
         // a larger MTP weight keeps the MTP layers' ones well above the finite differences'
         // rounding noise.
         c.mtp_loss_scaling_factor = 3.0;
       }},
  };
  return v;
}

ModelConfig mtp_config(const MtpVariant& variant) {
  ModelConfig c = test::tiny_gpt_config();
  c.mtp_num_layers = variant.depths;
  c.mtp_loss_scaling_factor = 0.7;  // large, so a wrong MTP gradient shows
  variant.apply(c);
  return c;
}

class MtpGradient : public ::testing::TestWithParam<size_t> {};

TEST_P(MtpGradient, WholeModelMatchesFiniteDifferences) {
  const MtpVariant& variant = mtp_variants()[GetParam()];
  SCOPED_TRACE(variant.name);
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const ModelConfig config = mtp_config(variant);
  GPTModel model(config, DType::f64, Device::cpu(), seed);
  test::randomize_norms_and_biases(model, seed + 100);
  const int64_t S = 5, B = 2;
  const Tensor ids = test::random_tokens(S, B, config.vocab_size, seed + 1);
  const Tensor labels = test::random_labels(S, B, config.vocab_size, seed + 2, 4);
  const Tensor mask = mixed_loss_mask(S, B);
  auto objective = [&] {
    nn::GPTContext ctx;
    return model.forward(ids, labels, ctx, mask).loss.item();
  };

  model.zero_grad();
  nn::GPTContext ctx;
  const nn::GPTLoss loss = model.forward(ids, labels, ctx, mask);
  EXPECT_GT(loss.mtp_loss.item(), 0.0);
  EXPECT_NEAR(loss.loss.item(), loss.lm_loss.item() + loss.aux_loss.item() + loss.mtp_loss.item(),
              1e-14);
  const double loss_scale = 1.5;
  model.backward(ctx, loss_scale);
  for (nn::Parameter* p : model.parameters()) {
    Tensor numeric = test::numerical_gradient(objective, p->value);
    ops::scale_(numeric, loss_scale);
    EXPECT_TRUE(test::close(p->grad_value(), numeric, test::kGradCheckTol, p->name));
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, MtpGradient, ::testing::Range<size_t>(0, 4),
                         [](const auto& info) {
                           return std::string(mtp_variants()[info.param].name);
                         });

// ---- A plain recomputation of the MTP loss from the model's own pieces ----

std::vector<double> host(const Tensor& t) {
  return t.to_double_vector();
}

// y = x * rsqrt(mean(x^2) + eps) * w, row by row.
std::vector<double> rms_norm(const std::vector<double>& x, const std::vector<double>& w,
                             double eps) {
  const size_t H = w.size();
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / H; ++r) {
    double ms = 0;
    for (size_t i = 0; i < H; ++i) ms += x[r * H + i] * x[r * H + i];
    const double rstd = 1.0 / std::sqrt(ms / static_cast<double>(H) + eps);
    for (size_t i = 0; i < H; ++i) y[r * H + i] = x[r * H + i] * rstd * w[i];
  }
  return y;
}

// y [rows, out] = x [rows, in] W^T, W [out, in].
std::vector<double> linear(const std::vector<double>& x, const std::vector<double>& w, size_t in) {
  const size_t rows = x.size() / in, out = w.size() / in;
  std::vector<double> y(rows * out, 0.0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t o = 0; o < out; ++o)
      for (size_t i = 0; i < in; ++i) y[r * out + o] += x[r * in + i] * w[o * in + i];
  return y;
}

double router_losses(const nn::TransformerLayer& layer, const nn::TransformerLayerContext& ctx) {
  if (!layer.is_moe()) return 0.0;
  double sum = 0;
  if (ctx.moe.router.aux_loss.defined()) sum += ctx.moe.router.aux_loss.item();
  if (ctx.moe.router.z_loss.defined()) sum += ctx.moe.router.z_loss.item();
  return sum;
}

// How the reference may deliberately deviate, to show the comparison can tell.
struct Deviation {
  bool swap_concat = false;     // [hnorm(h); enorm(e)] instead of [enorm(e); hnorm(h)]
  bool h0_before_norm = false;  // h_0 = the last layer's output, not after the final norm
  bool shift_by_one = false;    // every depth shifts by 1 instead of k
};

struct Reference {
  double mtp_loss = 0;
  double aux_loss = 0;  // main and MTP layers
};

Reference reference_mtp(GPTModel& model, const Tensor& ids, const Tensor& labels,
                        const Tensor& mask, Deviation dev = {}) {
  const ModelConfig& c = model.config();
  const int64_t S = ids.size(0), B = ids.size(1), T = S * B, H = c.hidden_size;
  const size_t h = static_cast<size_t>(H);
  Reference ref;
  // h_0 through the model's modules.
  Tensor x = ops::embedding_forward(ids, model.embed_tokens.value);
  std::vector<nn::TransformerLayerContext> lctx(model.layers.size());
  for (size_t l = 0; l < model.layers.size(); ++l) {
    x = model.layers[l].forward(x, lctx[l]);
    ref.aux_loss += router_losses(model.layers[l], lctx[l]);
  }
  nn::RMSNormContext nctx;
  std::vector<double> prev = dev.h0_before_norm ? host(x) : host(model.final_norm.forward(x, nctx));

  const std::vector<int64_t> y = labels.to_vector<int64_t>();
  const std::vector<int64_t> tok = ids.to_vector<int64_t>();
  const std::vector<double> m = host(mask), table = host(model.embed_tokens.value);
  const std::vector<double> w_out = host(model.output_weight().value);
  const int64_t V = c.vocab_size;
  double sum_losses = 0;
  for (int64_t d = 0; d < c.mtp_num_layers; ++d) {
    const int64_t k = dev.shift_by_one ? 1 : d + 1;
    nn::MtpLayer& mtp = model.mtp_layers[static_cast<size_t>(d)];
    // Embedding of the tokens k ahead (token 0 past the end, as Megatron's roll fills).
    std::vector<double> e(static_cast<size_t>(T * H));
    for (int64_t s = 0; s < S; ++s)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t id = s + k < S ? tok[(s + k) * B + b] : 0;
        for (int64_t i = 0; i < H; ++i) e[(s * B + b) * H + i] = table[id * H + i];
      }
    const std::vector<double> en = rms_norm(e, host(mtp.enorm.weight.value), c.norm_epsilon);
    const std::vector<double> hn = rms_norm(prev, host(mtp.hnorm.weight.value), c.norm_epsilon);
    std::vector<double> cat(static_cast<size_t>(T * 2 * H));
    for (size_t t = 0; t < static_cast<size_t>(T); ++t)
      for (size_t i = 0; i < h; ++i) {
        cat[t * 2 * h + i] = dev.swap_concat ? hn[t * h + i] : en[t * h + i];
        cat[t * 2 * h + h + i] = dev.swap_concat ? en[t * h + i] : hn[t * h + i];
      }
    const std::vector<double> u = linear(cat, host(mtp.eh_proj.value), 2 * h);
    nn::TransformerLayerContext tctx;
    const Tensor v = mtp.layer.forward(Tensor::from_vector(u, {S, B, H}), tctx);
    ref.aux_loss += router_losses(mtp.layer, tctx);
    prev = rms_norm(host(v), host(mtp.final_norm.weight.value), c.norm_epsilon);
    // Cross-entropy of the full logits over the positions whose target s + k + 1 exists.
    const std::vector<double> z = linear(prev, w_out, h);
    double loss = 0, weight = 0;
    for (int64_t s = 0; s + k < S; ++s)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t src = (s + k) * B + b, t = s * B + b;
        if (y[src] == ops::kIgnoreIndex) continue;
        double mx = -INFINITY, se = 0;
        for (int64_t j = 0; j < V; ++j) mx = std::max(mx, z[t * V + j]);
        for (int64_t j = 0; j < V; ++j) se += std::exp(z[t * V + j] - mx);
        loss += m[src] * (mx + std::log(se) - z[t * V + y[src]]);
        weight += m[src];
      }
    sum_losses += weight > 0 ? loss / weight : 0.0;
  }
  ref.mtp_loss = c.mtp_loss_scaling_factor / static_cast<double>(c.mtp_num_layers) * sum_losses;
  return ref;
}

TEST(Mtp, LossMatchesPlainRecomputation) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const MtpVariant& variant : mtp_variants()) {
    SCOPED_TRACE(variant.name);
    ModelConfig config = mtp_config(variant);
    config.mtp_num_layers = 3;
    GPTModel model(config, DType::f64, Device::cpu(), seed);
    test::randomize_norms_and_biases(model, seed + 100);
    const int64_t S = 7, B = 3;
    const Tensor ids = test::random_tokens(S, B, config.vocab_size, seed + 1);
    const Tensor labels = test::random_labels(S, B, config.vocab_size, seed + 2, 5);
    const Tensor mask = mixed_loss_mask(S, B);
    nn::GPTContext ctx;
    const nn::GPTLoss loss = model.forward(ids, labels, ctx, mask);
    const Reference ref = reference_mtp(model, ids, labels, mask);
    EXPECT_NEAR(loss.mtp_loss.item(), ref.mtp_loss, 1e-12 * std::abs(ref.mtp_loss));
    EXPECT_NEAR(loss.aux_loss.item(), ref.aux_loss, 1e-12);
    EXPECT_NEAR(loss.loss.item(), loss.lm_loss.item() + loss.aux_loss.item() + loss.mtp_loss.item(),
                1e-13);
    // The comparison tells a swapped concatenation, h_0 taken before the final norm, and a
    // shift of 1 at every depth apart.
    for (const Deviation& dev : {Deviation{.swap_concat = true}, Deviation{.h0_before_norm = true},
                                 Deviation{.shift_by_one = true}}) {
      const double wrong = reference_mtp(model, ids, labels, mask, dev).mtp_loss;
      EXPECT_GT(std::abs(wrong - ref.mtp_loss), 1e-6 * std::abs(ref.mtp_loss));
    }
  }
}

// Without a loss mask the positions past the end still drop out (their labels are ignored).
TEST(Mtp, LossWithoutMaskMatchesRecomputation) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  ModelConfig config = mtp_config(mtp_variants()[1]);
  GPTModel model(config, DType::f64, Device::cpu(), seed);
  test::randomize_norms_and_biases(model, seed + 100);
  const int64_t S = 4, B = 2;
  const Tensor ids = test::random_tokens(S, B, config.vocab_size, seed + 1);
  const Tensor labels = test::random_tokens(S, B, config.vocab_size, seed + 2);
  nn::GPTContext ctx;
  const nn::GPTLoss loss = model.forward(ids, labels, ctx);
  const Reference ref = reference_mtp(model, ids, labels, Tensor::full({S, B}, 1.0, DType::f32));
  EXPECT_NEAR(loss.mtp_loss.item(), ref.mtp_loss, 1e-12 * std::abs(ref.mtp_loss));
}

// D = 0: no MTP loss, and the main loss, logits and parameters are those of the same model
// with MTP layers (which are built after the decoder and draw their own seeds). With the MTP
// loss factor 0 and dense MTP layers, the MTP layers contribute no gradient at all.
TEST(Mtp, NoMtpLeavesTheModelUnchanged) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  ModelConfig base = test::tiny_gpt_config();
  base.moe_layer_pattern = {1, 0};  // dense last layer: dense MTP layers, no aux loss there
  ModelConfig with = base;
  with.mtp_num_layers = 2;
  with.mtp_loss_scaling_factor = 0.0;
  GPTModel plain(base, DType::f64, Device::cpu(), seed), mtp(with, DType::f64, Device::cpu(), seed);
  const Tensor ids = test::random_tokens(5, 2, base.vocab_size, seed + 1);
  const Tensor labels = test::random_labels(5, 2, base.vocab_size, seed + 2, 3);
  plain.zero_grad();
  mtp.zero_grad();
  nn::GPTContext pctx, mctx;
  const nn::GPTLoss p = plain.forward(ids, labels, pctx), m = mtp.forward(ids, labels, mctx);
  EXPECT_EQ(p.mtp_loss.item(), 0.0);
  EXPECT_EQ(p.loss.item(), p.lm_loss.item() + p.aux_loss.item());
  EXPECT_EQ(m.lm_loss.item(), p.lm_loss.item());
  EXPECT_EQ(m.aux_loss.item(), p.aux_loss.item());
  EXPECT_EQ(m.mtp_loss.item(), 0.0);
  EXPECT_TRUE(test::equal(mtp.logits(ids), plain.logits(ids), "logits"));
  plain.backward(pctx);
  mtp.backward(mctx);
  auto pp = plain.parameters(), mp = mtp.parameters();
  size_t matched = 0;
  for (nn::Parameter* q : mp) {
    for (nn::Parameter* r : pp) {
      if (r->name != q->name) continue;
      ++matched;
      EXPECT_TRUE(test::equal(q->value, r->value, q->name));
      EXPECT_TRUE(test::close(q->grad_value(), r->grad_value(), 1e-14, q->name));
    }
  }
  EXPECT_EQ(matched, pp.size());
}

// Names: model.layers.<L + k>.{enorm, hnorm, eh_proj, shared_head.norm} plus the transformer
// layer's own tensors; unique; the count equals param_count.h's total for the config.
TEST(Mtp, ParameterNamesAndCount) {
  ModelConfig config = test::tiny_gpt_config();
  config.mtp_num_layers = 2;
  config.qk_layernorm = true;
  GPTModel model(config, DType::f32, Device::cpu());
  std::set<std::string> names, layer3;
  for (nn::Parameter* p : model.parameters()) {
    EXPECT_TRUE(names.insert(p->name).second) << p->name;
    if (p->name.starts_with("model.layers.3.")) layer3.insert(p->name.substr(15));
  }
  const std::set<std::string> expected = {"enorm.weight",
                                          "hnorm.weight",
                                          "eh_proj.weight",
                                          "shared_head.norm.weight",
                                          "input_layernorm.weight",
                                          "post_attention_layernorm.weight",
                                          "self_attn.q_proj.weight",
                                          "self_attn.k_proj.weight",
                                          "self_attn.v_proj.weight",
                                          "self_attn.o_proj.weight",
                                          "self_attn.q_norm.weight",
                                          "self_attn.k_norm.weight",
                                          "mlp.gate.weight",
                                          "mlp.experts.gate_up_proj",
                                          "mlp.experts.down_proj"};
  EXPECT_EQ(layer3, expected);
  EXPECT_TRUE(names.contains("model.layers.2.eh_proj.weight"));
  EXPECT_FALSE(names.contains("model.layers.4.eh_proj.weight"));
  EXPECT_EQ(model.mtp_layers[1].index(), 3);
  EXPECT_EQ(model.mtp_layers[0].eh_proj.value.shape(), (Shape{8, 16}));

  for (bool tied : {false, true})
    for (int64_t depths : {1, 3})
      for (bool shared : {false, true})
        for (bool dense_last : {false, true}) {
          ModelConfig c = test::tiny_gpt_config();
          c.untie_embeddings_and_output_weights = !tied;
          c.mtp_num_layers = depths;
          c.add_qkv_bias = shared;
          if (shared) c.moe.moe_shared_expert_intermediate_size = 5;
          c.moe.moe_shared_expert_gate = shared;
          if (dense_last) c.moe_layer_pattern = {1, 0};
          GPTModel m(c, DType::f32, Device::cpu());
          int64_t total = 0;
          for (nn::Parameter* p : m.parameters()) total += p->value.numel();
          const nn::ModelParamCount count = nn::count_parameters(c);
          EXPECT_EQ(total, count.total()) << tied << depths << shared << dense_last;
          EXPECT_GT(count.mtp.total(), 0);
        }
  const ModelConfig mla = mtp_config(mtp_variants()[3]);
  GPTModel m(mla, DType::f32, Device::cpu());
  int64_t total = 0;
  for (nn::Parameter* p : m.parameters()) total += p->value.numel();
  EXPECT_EQ(total, nn::count_parameters(mla).total());
  EXPECT_TRUE(m.mtp_layers[1].layer.is_mla());
}

// The MTP layers' expert biases are buffers like the decoder's; finish_step updates them.
TEST(Mtp, ExpertBiasBuffers) {
  ModelConfig config = test::tiny_gpt_config();
  config.mtp_num_layers = 2;
  config.moe.moe_router_enable_expert_bias = true;
  config.moe.moe_router_bias_update_rate = 0.5;
  GPTModel model(config, DType::f64, Device::cpu(), 9);
  std::vector<std::string> names;
  for (const nn::NamedBuffer& b : model.buffers()) names.push_back(b.name);
  EXPECT_EQ(names, (std::vector<std::string>{"model.layers.1.mlp.gate.e_score_correction_bias",
                                             "model.layers.2.mlp.gate.e_score_correction_bias",
                                             "model.layers.3.mlp.gate.e_score_correction_bias"}));
  const Tensor ids = test::random_tokens(6, 2, config.vocab_size, 10);
  nn::GPTContext ctx;
  model.forward(ids, ids, ctx);
  model.finish_step();
  const std::vector<double> bias = model.buffers().back().value->to_double_vector();
  double norm = 0;
  for (double b : bias) norm += std::abs(b);
  EXPECT_GT(norm, 0.0);  // 12 tokens top-2 over 4 experts are never perfectly balanced here
}

// Megatron: eh_proj normal(0, std); the MTP layer's residual-writing projections
// std / sqrt(2 L) with L the decoder's --num-layers; norms one.
TEST(Mtp, Initialisation) {
  ModelConfig config = test::small_gpt_config();  // 3 layers, the last MoE
  config.mtp_num_layers = 1;
  config.moe_layer_pattern = {1, 1, 0};  // a dense MTP layer: its MLP's down_proj too
  GPTModel model(config, DType::f32, Device::cpu(), 5);
  const double std = config.init_method_std, out_std = std / std::sqrt(6.0);
  nn::MtpLayer& mtp = model.mtp_layers[0];
  EXPECT_NEAR(test::sample_std(mtp.eh_proj.value), std, 0.03 * std);
  EXPECT_NEAR(test::sample_std(mtp.layer.self_attention.q_proj.value), std, 0.05 * std);
  EXPECT_NEAR(test::sample_std(mtp.layer.self_attention.o_proj.value), out_std, 0.04 * out_std);
  EXPECT_NEAR(test::sample_std(mtp.layer.mlp->fc2.value), out_std, 0.04 * out_std);
  EXPECT_EQ(mtp.final_norm.weight.value.to_double_vector(),
            std::vector<double>(static_cast<size_t>(config.hidden_size), 1.0));
  EXPECT_GT(test::relative_error(mtp.layer.self_attention.q_proj.value,
                                 model.layers[2].self_attention.q_proj.value),
            0.5);
}

// The f32 and bf16 CPU models (the GPU test's yardsticks) run MTP: f32 agrees with f64 on the
// same weights; bf16 (routing forced, so rounding cannot flip a choice) stays within bf16's
// tolerance and gives finite gradients.
TEST(Mtp, LowerPrecisionCpuModels) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  ModelConfig config = test::small_gpt_config();
  config.mtp_num_layers = 2;
  config.moe.moe_router_force_load_balancing = true;
  config.moe.moe_router_dtype = nn::RouterDType::fp32;
  GPTModel reference(config, DType::f64, Device::cpu(), seed);
  test::randomize_norms_and_biases(reference, seed + 100);
  const Tensor ids = test::random_tokens(9, 2, config.vocab_size, seed + 1);
  const Tensor labels = test::random_labels(9, 2, config.vocab_size, seed + 2, 4);
  nn::GPTContext rctx;
  const double expected = reference.forward(ids, labels, rctx).mtp_loss.item();
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    GPTModel model(config, dtype, Device::cpu(), seed);
    auto dst = model.parameters(), src = reference.parameters();
    for (size_t i = 0; i < dst.size(); ++i)
      dst[i]->value.copy_(src[i]->value.to(dst[i]->value.dtype()));
    nn::GPTContext ctx;
    const double got = model.forward(ids, labels, ctx).mtp_loss.item();
    EXPECT_NEAR(got, expected, (dtype == DType::f32 ? 1e-5 : test::tolerance(dtype)) * expected);
    model.zero_grad();
    model.backward(ctx);
    for (nn::Parameter* p : model.parameters())
      for (double g : p->grad_value().to_double_vector()) ASSERT_TRUE(std::isfinite(g)) << p->name;
  }
}

TEST(Mtp, BadInputNamesTheCause) {
  ModelConfig config = test::tiny_gpt_config();
  config.mtp_num_layers = 2;
  GPTModel model(config, DType::f64, Device::cpu());
  nn::GPTContext ctx;
  const Tensor short_ids = test::random_tokens(2, 3, config.vocab_size, 1);
  try {
    model.forward(short_ids, short_ids, ctx);
    ADD_FAILURE() << "no error for a sequence of length 2 with 2 MTP depths";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--mtp-num-layers"), std::string::npos) << e.what();
  }
  const Tensor ids = test::random_tokens(3, 2, config.vocab_size, 1);
  model.forward(ids, ids, ctx);  // S = 3 > D = 2 works
  model.cross_entropy.reduction = ops::CrossEntropyReduction::sum;
  EXPECT_THROW(model.forward(ids, ids, ctx), Error);
  model.cross_entropy.reduction = ops::CrossEntropyReduction::mean;

  // A context from a model without MTP layers.
  ModelConfig plain_config = test::tiny_gpt_config();
  GPTModel plain(plain_config, DType::f64, Device::cpu());
  nn::GPTContext plain_ctx;
  plain.forward(ids, ids, plain_ctx);
  EXPECT_THROW(model.backward(plain_ctx), Error);

  EXPECT_THROW(nn::MtpLayer(config, 2, DType::f64, Device::cpu(), 1), Error);  // depth >= D
  nn::MtpLayer layer(config, 0, DType::f64, Device::cpu(), 1);
  nn::MtpLayerContext lctx;
  const Tensor x = Tensor::zeros({3, 2, 8}, DType::f64);
  EXPECT_THROW(layer.forward(x, Tensor::zeros({3, 2, 7}, DType::f64), lctx), Error);
  EXPECT_THROW(layer.backward(x, lctx), Error);  // backward without a forward
}

}  // namespace
}  // namespace moe
