// GPTModel on the CPU: fp64 finite-difference gradients of the loss of the whole tiny model
// (embedding, GQA attention with QK-norm / qkv bias / partial and interleaved rotary / YaRN,
// dense and MoE layers, tied and untied output, ignored labels) for every parameter tensor;
// the loss scale; lazy zero_grad; the untrained loss near log(vocab); the loss against the
// full logits; initialisation; names; and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <set>
#include <string>

#include "moe/ops/elementwise.h"
#include "nn/gpt_test_util.h"
#include "nn/gradient_check.h"

namespace moe {
namespace {

using nn::GPTModel;
using nn::ModelConfig;

struct Variant {
  const char* name;
  std::function<void(ModelConfig&)> apply;
};

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"qk_norm_tied",
       [](ModelConfig& c) {
         c.qk_layernorm = true;
         c.untie_embeddings_and_output_weights = false;
       }},
      {"qkv_bias_untied_partial_rotary",
       [](ModelConfig& c) {
         c.add_qkv_bias = true;
         c.kv_channels = 4;  // q/k/v widths 16/8/8 != hidden 8; rotary on 2 of 4 features
         c.rotary_percent = 0.5;
       }},
      {"mha_interleaved_yarn_shared_expert_seq_aux_tied",
       [](ModelConfig& c) {
         c.num_query_groups = 4;
         c.rotary_style = nn::RotaryStyle::interleaved;
         c.yarn = nn::YarnConfig{.factor = 4.0, .original_max_position_embeddings = 4};
         c.untie_embeddings_and_output_weights = false;
         c.moe_layer_pattern = {1, 0};
         c.moe.moe_shared_expert_intermediate_size = 5;
         c.moe.moe_shared_expert_gate = true;
         c.moe.moe_router_load_balancing_type = nn::LoadBalancingType::seq_aux_loss;
       }},
  };
  return v;
}

class GPTModelGradient : public ::testing::TestWithParam<size_t> {};

TEST_P(GPTModelGradient, WholeModelMatchesFiniteDifferences) {
  const Variant& variant = variants()[GetParam()];
  SCOPED_TRACE(variant.name);
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  ModelConfig config = test::tiny_gpt_config();
  variant.apply(config);
  GPTModel model(config, DType::f64, Device::cpu(), seed);
  test::randomize_norms_and_biases(model, seed + 100);
  const int64_t S = 5, B = 2;
  const Tensor ids = test::random_tokens(S, B, config.vocab_size, seed + 1);
  const Tensor labels = test::random_labels(S, B, config.vocab_size, seed + 2, 3);
  auto objective = [&] {
    nn::GPTContext ctx;
    return model.forward(ids, labels, ctx).loss.item();
  };

  model.zero_grad();
  nn::GPTContext ctx;
  const nn::GPTLoss loss = model.forward(ids, labels, ctx);
  EXPECT_GT(loss.aux_loss.item(), 0.0);
  EXPECT_NEAR(loss.loss.item(), loss.lm_loss.item() + loss.aux_loss.item(), 1e-14);
  model.backward(ctx);
  test::expect_parameter_gradients(objective, model.parameters());
}

INSTANTIATE_TEST_SUITE_P(Variants, GPTModelGradient, ::testing::Range<size_t>(0, 3),
                         [](const auto& info) { return std::string(variants()[info.param].name); });

// backward(loss_scale) scales every gradient, the MoE aux/z-loss parts included; gradients
// accumulate over backwards and zero_grad forgets them.
TEST(GPTModel, LossScaleAndAccumulation) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  ModelConfig config = test::tiny_gpt_config();
  config.moe.moe_aux_loss_coeff = 0.5;  // large, so an unscaled aux gradient would show
  config.moe.moe_z_loss_coeff = 0.1;
  GPTModel model(config, DType::f64, Device::cpu(), seed);
  const Tensor ids = test::random_tokens(6, 3, config.vocab_size, seed + 1);
  const Tensor labels = test::random_labels(6, 3, config.vocab_size, seed + 2, 4);
  auto step = [&](double scale) {
    nn::GPTContext ctx;
    model.forward(ids, labels, ctx);
    model.backward(ctx, scale);
  };
  auto grads = [&] {
    std::vector<Tensor> g;
    for (nn::Parameter* p : model.parameters()) g.push_back(p->grad_value().clone());
    return g;
  };
  model.zero_grad();
  step(1.0);
  const std::vector<Tensor> once = grads();
  model.zero_grad();
  step(4.0);
  step(1.0);  // accumulates: 5x
  const std::vector<Tensor> five = grads();
  const auto params = model.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor expected = once[i].clone();
    ops::scale_(expected, 5.0);
    EXPECT_TRUE(test::close(five[i], expected, 1e-12, params[i]->name));
  }
}

// A forward told the loss scale in advance (the trainer's path: the output layer's loss
// backward runs inside the forward) gives the gradients of forward + backward(scale), tied and
// untied; backward with another scale, or twice, is refused.
TEST(GPTModel, LossScaleKnownInForwardGivesTheSameGradients) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    ModelConfig config = test::tiny_gpt_config();
    config.untie_embeddings_and_output_weights = !tied;
    GPTModel model(config, DType::f64, Device::cpu(), seed);
    const Tensor ids = test::random_tokens(6, 3, config.vocab_size, seed + 1);
    const Tensor labels = test::random_labels(6, 3, config.vocab_size, seed + 2, 4);
    auto grads = [&] {
      std::vector<Tensor> g;
      for (nn::Parameter* p : model.parameters()) g.push_back(p->grad_value().clone());
      return g;
    };
    model.zero_grad();
    for (double scale : {0.25, 0.5}) {
      nn::GPTContext ctx;
      model.forward(ids, labels, ctx);
      model.backward(ctx, scale);
    }
    const std::vector<Tensor> plain = grads();
    model.zero_grad();
    for (double scale : {0.25, 0.5}) {
      nn::GPTContext ctx;
      ctx.loss_scale_known_in_forward = scale;
      model.forward(ids, labels, ctx);
      model.backward(ctx, scale);
    }
    const std::vector<Tensor> fused = grads();
    const auto params = model.parameters();
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(test::close(fused[i], plain[i], 1e-12, params[i]->name));

    nn::GPTContext ctx;
    ctx.loss_scale_known_in_forward = 0.5;
    model.forward(ids, labels, ctx);
    EXPECT_THROW(model.backward(ctx, 1.0), Error);
    model.backward(ctx, 0.5);
    EXPECT_THROW(model.backward(ctx, 0.5), Error);
  }
}

// An untrained model (std 0.02) predicts nearly uniform tokens: loss ~ log V; with nearly
// uniform router scores the aux loss is the coefficient per MoE layer.
TEST(GPTModel, UntrainedLossIsNearLogVocab) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    ModelConfig config = test::small_gpt_config();
    config.init_method_std = 0.02;
    config.moe.moe_z_loss_coeff.reset();
    config.untie_embeddings_and_output_weights = !tied;
    GPTModel model(config, DType::f32, Device::cpu(), seed);
    const Tensor ids = test::random_tokens(33, 2, config.vocab_size, seed + 1);
    const Tensor labels = test::random_tokens(33, 2, config.vocab_size, seed + 2);
    nn::GPTContext ctx;
    const nn::GPTLoss loss = model.forward(ids, labels, ctx);
    EXPECT_NEAR(loss.lm_loss.item(), std::log(static_cast<double>(config.vocab_size)), 0.2);
    EXPECT_NEAR(loss.aux_loss.item(), 2 * config.moe.moe_aux_loss_coeff, 1e-3);
  }
}

// The fused loss equals the cross-entropy of the full logits, written out here; ignored labels
// and a loss mask leave their tokens out of the mean.
TEST(GPTModel, LossMatchesFullLogits) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const Variant& variant : variants()) {
    SCOPED_TRACE(variant.name);
    ModelConfig config = test::tiny_gpt_config();
    variant.apply(config);
    GPTModel model(config, DType::f64, Device::cpu(), seed);
    const int64_t S = 7, B = 3, V = config.vocab_size;
    const Tensor ids = test::random_tokens(S, B, V, seed + 1);
    const Tensor labels = test::random_labels(S, B, V, seed + 2, 5);
    std::vector<float> mask(static_cast<size_t>(S * B), 1.0f);
    mask[4] = 0.0f;
    mask[9] = 0.5f;
    const Tensor loss_mask = Tensor::from_vector(mask, {S, B});
    nn::GPTContext ctx;
    const double fused = model.forward(ids, labels, ctx, loss_mask).lm_loss.item();
    const std::vector<double> z = model.logits(ids).to_double_vector();
    const std::vector<int64_t> y = labels.to_vector<int64_t>();
    double sum = 0, weight = 0;
    for (int64_t t = 0; t < S * B; ++t) {
      if (y[t] == ops::kIgnoreIndex) continue;
      double m = -INFINITY, s = 0;
      for (int64_t v = 0; v < V; ++v) m = std::max(m, z[t * V + v]);
      for (int64_t v = 0; v < V; ++v) s += std::exp(z[t * V + v] - m);
      sum += mask[t] * (m + std::log(s) - z[t * V + y[t]]);
      weight += mask[t];
    }
    EXPECT_NEAR(fused, sum / weight, 1e-12);
  }
}

// Labels all ignored: the language-model loss is 0 (not NaN), the output layer gets no
// gradient, and the aux losses still train the routers.
TEST(GPTModel, AllLabelsIgnored) {
  ModelConfig config = test::tiny_gpt_config();
  config.untie_embeddings_and_output_weights = true;
  GPTModel model(config, DType::f64, Device::cpu(), 5);
  const Tensor ids = test::random_tokens(4, 2, config.vocab_size, 6);
  const Tensor labels = Tensor::full({4, 2}, static_cast<double>(ops::kIgnoreIndex), DType::i64);
  nn::GPTContext ctx;
  const nn::GPTLoss loss = model.forward(ids, labels, ctx);
  EXPECT_EQ(loss.lm_loss.item(), 0.0);
  EXPECT_TRUE(std::isfinite(loss.loss.item()));
  EXPECT_GT(loss.aux_loss.item(), 0.0);
  model.zero_grad();
  model.backward(ctx);
  for (nn::Parameter* p : model.parameters()) {
    const std::vector<double> g = p->grad_value().to_double_vector();
    double norm = 0;
    for (double x : g) norm += x * x;
    EXPECT_TRUE(std::isfinite(norm)) << p->name;
    if (p->name == "lm_head.weight") {
      EXPECT_EQ(norm, 0.0);
    }
    if (p->name == "model.layers.1.mlp.gate.weight") {
      EXPECT_GT(norm, 0.0);
    }
  }
}

// Parameter names: Hugging-Face-like, unique; a tied output weight is the embedding.
TEST(GPTModel, ParameterNames) {
  ModelConfig config = test::tiny_gpt_config();
  config.qk_layernorm = true;
  config.add_qkv_bias = true;
  config.untie_embeddings_and_output_weights = false;
  GPTModel tied(config, DType::f32, Device::cpu());
  std::set<std::string> names;
  for (nn::Parameter* p : tied.parameters()) EXPECT_TRUE(names.insert(p->name).second) << p->name;
  const std::set<std::string> expected = {"model.embed_tokens.weight",
                                          "model.norm.weight",
                                          "model.layers.0.input_layernorm.weight",
                                          "model.layers.0.post_attention_layernorm.weight",
                                          "model.layers.0.self_attn.q_proj.weight",
                                          "model.layers.0.self_attn.q_proj.bias",
                                          "model.layers.0.self_attn.k_proj.weight",
                                          "model.layers.0.self_attn.k_proj.bias",
                                          "model.layers.0.self_attn.v_proj.weight",
                                          "model.layers.0.self_attn.v_proj.bias",
                                          "model.layers.0.self_attn.o_proj.weight",
                                          "model.layers.0.self_attn.q_norm.weight",
                                          "model.layers.0.self_attn.k_norm.weight",
                                          "model.layers.0.mlp.gate_up_proj.weight",
                                          "model.layers.0.mlp.down_proj.weight",
                                          "model.layers.1.input_layernorm.weight",
                                          "model.layers.1.post_attention_layernorm.weight",
                                          "model.layers.1.self_attn.q_proj.weight",
                                          "model.layers.1.self_attn.q_proj.bias",
                                          "model.layers.1.self_attn.k_proj.weight",
                                          "model.layers.1.self_attn.k_proj.bias",
                                          "model.layers.1.self_attn.v_proj.weight",
                                          "model.layers.1.self_attn.v_proj.bias",
                                          "model.layers.1.self_attn.o_proj.weight",
                                          "model.layers.1.self_attn.q_norm.weight",
                                          "model.layers.1.self_attn.k_norm.weight",
                                          "model.layers.1.mlp.gate.weight",
                                          "model.layers.1.mlp.experts.gate_up_proj",
                                          "model.layers.1.mlp.experts.down_proj"};
  EXPECT_EQ(names, expected);
  EXPECT_EQ(&tied.output_weight(), &tied.embed_tokens);

  config.untie_embeddings_and_output_weights = true;
  GPTModel untied(config, DType::f32, Device::cpu());
  EXPECT_EQ(untied.parameters().back()->name, "lm_head.weight");
  EXPECT_EQ(&untied.output_weight(), &untied.lm_head);
  EXPECT_EQ(untied.parameters().size(), expected.size() + 1);
}

// Megatron's initialisation: normal(0, std), the residual-writing projections (o_proj, the
// MLPs' and experts' down projections) std / sqrt(2 L), norms one; distinct draws per tensor
// and per layer; the same seed gives the same model.
TEST(GPTModel, Initialisation) {
  ModelConfig config = test::small_gpt_config();
  config.num_layers = 4;
  config.moe_layer_pattern = {0, 1, 0, 1};
  config.untie_embeddings_and_output_weights = true;
  config.moe.moe_shared_expert_intermediate_size = 64;
  GPTModel model(config, DType::f32, Device::cpu(), 77);
  const double std = config.init_method_std, out_std = std / std::sqrt(8.0);
  auto& l0 = model.layers[0];
  auto& l1 = model.layers[1];
  EXPECT_NEAR(test::sample_std(model.embed_tokens.value), std, 0.03 * std);
  EXPECT_NEAR(test::sample_std(model.lm_head.value), std, 0.03 * std);
  EXPECT_NEAR(test::sample_std(l0.self_attention.q_proj.value), std, 0.05 * std);
  EXPECT_NEAR(test::sample_std(l0.self_attention.o_proj.value), out_std, 0.05 * out_std);
  EXPECT_NEAR(test::sample_std(l0.mlp->fc1.value), std, 0.05 * std);
  EXPECT_NEAR(test::sample_std(l0.mlp->fc2.value), out_std, 0.05 * out_std);
  EXPECT_NEAR(test::sample_std(l1.moe->experts.fc1.value), std, 0.03 * std);
  EXPECT_NEAR(test::sample_std(l1.moe->experts.fc2.value), out_std, 0.03 * out_std);
  EXPECT_NEAR(test::sample_std(l1.moe->shared_expert->fc2.value), out_std, 0.05 * out_std);
  EXPECT_EQ(l0.input_layernorm.weight.value.to_double_vector(),
            std::vector<double>(static_cast<size_t>(config.hidden_size), 1.0));
  EXPECT_GT(test::relative_error(l0.self_attention.q_proj.value, l1.self_attention.q_proj.value),
            0.5);
  EXPECT_GT(test::relative_error(l0.self_attention.k_proj.value, l0.self_attention.v_proj.value),
            0.5);
  EXPECT_GT(
      test::relative_error(model.layers[3].moe->router.weight.value, l1.moe->router.weight.value),
      0.5);
  GPTModel same(config, DType::f32, Device::cpu(), 77),
      other(config, DType::f32, Device::cpu(), 78);
  auto a = model.parameters(), b = same.parameters(), c = other.parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(test::equal(a[i]->value, b[i]->value, a[i]->name));
    if (a[i]->name.find("norm") == std::string::npos) {
      EXPECT_GT(test::relative_error(a[i]->value, c[i]->value), 0.5) << a[i]->name;
    }
  }
}

TEST(GPTModel, BadConfigOrInputNamesTheCause) {
  auto build = [](const std::function<void(ModelConfig&)>& change) {
    ModelConfig c = test::tiny_gpt_config(DType::f32);
    change(c);
    GPTModel model(c, DType::f32, Device::cpu());
  };
  auto throws_with = [&](const std::function<void(ModelConfig&)>& change, const std::string& text) {
    try {
      build(change);
      ADD_FAILURE() << "no error; expected one naming " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  build([](ModelConfig&) {});  // the base config is valid
  throws_with([](ModelConfig& c) { c.mtp_num_layers = -1; }, "--mtp-num-layers");
  throws_with([](ModelConfig& c) { c.num_query_groups = 3; }, "--num-query-groups");
  throws_with([](ModelConfig& c) { c.rotary_percent = 0.5; }, "rotary");  // head dim 2 -> 1
  throws_with([](ModelConfig& c) { c.moe_layer_pattern = {0, 1, 1}; }, "--moe-layer-freq");
  throws_with([](ModelConfig& c) { c.ffn_hidden_size = 0; }, "--ffn-hidden-size");
  throws_with([](ModelConfig& c) { c.vocab_size = 0; }, "--vocab-size");

  ModelConfig c = test::tiny_gpt_config(DType::f32);
  GPTModel model(c, DType::f32, Device::cpu());
  nn::GPTContext ctx;
  const Tensor ids = test::random_tokens(4, 2, c.vocab_size, 1);
  EXPECT_THROW(model.forward(ids, test::random_tokens(2, 4, c.vocab_size, 2), ctx), Error);
  EXPECT_THROW(model.forward(ids.reshape({8}), ids.reshape({8}), ctx), Error);
  const Tensor bad = Tensor::full({4, 2}, static_cast<double>(c.vocab_size), DType::i64);
  EXPECT_THROW(model.forward(bad, ids, ctx), Error);  // token id out of range
  EXPECT_THROW(model.forward(ids, bad, ctx), Error);  // label out of range
  EXPECT_THROW(model.forward(ids, ids, ctx, Tensor::zeros({4, 3}, DType::f32)), Error);
  nn::GPTContext empty;
  EXPECT_THROW(model.backward(empty), Error);
}

}  // namespace
}  // namespace moe
