// Dropout in the model (--hidden-dropout, --attention-dropout; ops/dropout.h): off unless a
// forward is marked as training (GPTContext::dropout_first_sample), bitwise unchanged with
// p = 0, the whole model's gradients against finite differences with the masks fixed (GQA and
// MLA, MTP depths), the main loss independent of how a batch is split into micro-batches, and
// the two config fields in model_config.json.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "moe/nn/gpt_model.h"
#include "moe/nn/model_config_json.h"
#include "nn/gpt_test_util.h"
#include "nn/gradient_check.h"

namespace moe::nn {
namespace {

ModelConfig with_dropout(ModelConfig c, double hidden, double attention) {
  c.hidden_dropout = hidden;
  c.attention_dropout = attention;
  return c;
}

GPTLoss run(GPTModel& model, const Tensor& ids, const Tensor& labels,
            std::optional<int64_t> first_sample, bool backward = false) {
  GPTContext ctx;
  ctx.dropout_first_sample = first_sample;
  GPTLoss loss = model.forward(ids, labels, ctx);
  if (backward) model.backward(ctx);
  return loss;
}

std::vector<Tensor> gradients(GPTModel& model) {
  std::vector<Tensor> g;
  for (Parameter* p : model.parameters()) g.push_back(p->grad_value().clone());
  return g;
}

// Columns [b0, b0 + n) of a [S, B] token tensor.
Tensor columns(const Tensor& t, int64_t b0, int64_t n) {
  const int64_t S = t.size(0), B = t.size(1);
  const std::vector<int64_t> v = t.to_vector<int64_t>();
  std::vector<int64_t> out;
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = b0; b < b0 + n; ++b) out.push_back(v[size_t(s * B + b)]);
  return Tensor::from_vector(out, {S, n});
}

// Without a training mark the rates do nothing; with one and rates 0 nothing changes either
// (bitwise: the loss and every gradient); with rates > 0 the loss changes.
TEST(ModelDropout, OffOutsideTrainingAndBitwiseUnchangedAtZero) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const ModelConfig base = test::tiny_gpt_config(DType::f32);
  const Tensor ids = test::random_tokens(6, 3, base.vocab_size, seed + 1);
  const Tensor labels = test::random_labels(6, 3, base.vocab_size, seed + 2, 4);

  GPTModel plain(base, DType::f32, Device::cpu(), seed);
  plain.zero_grad();
  const GPTLoss reference = run(plain, ids, labels, std::nullopt, true);
  const std::vector<Tensor> reference_grads = gradients(plain);

  GPTModel zero(base, DType::f32, Device::cpu(), seed);  // rates 0, marked as training
  zero.zero_grad();
  EXPECT_TRUE(test::equal(run(zero, ids, labels, 5, true).loss, reference.loss));
  const std::vector<Tensor> zero_grads = gradients(zero);
  for (size_t i = 0; i < zero_grads.size(); ++i)
    EXPECT_TRUE(test::equal(zero_grads[i], reference_grads[i], plain.parameters()[i]->name));

  GPTModel rated(with_dropout(base, 0.2, 0.3), DType::f32, Device::cpu(), seed);
  EXPECT_TRUE(test::equal(run(rated, ids, labels, std::nullopt).loss, reference.loss));
  EXPECT_TRUE(test::equal(rated.logits(ids), plain.logits(ids)));
  const double trained = run(rated, ids, labels, 5).lm_loss.item();
  EXPECT_NE(trained, reference.lm_loss.item());
  // Each rate alone acts, and another micro-batch (first sample) draws other masks.
  GPTModel hidden_only(with_dropout(base, 0.2, 0.0), DType::f32, Device::cpu(), seed);
  GPTModel attention_only(with_dropout(base, 0.0, 0.3), DType::f32, Device::cpu(), seed);
  EXPECT_NE(run(hidden_only, ids, labels, 5).lm_loss.item(), reference.lm_loss.item());
  EXPECT_NE(run(attention_only, ids, labels, 5).lm_loss.item(), reference.lm_loss.item());
  EXPECT_NE(run(rated, ids, labels, 6).lm_loss.item(), trained);
  EXPECT_EQ(run(rated, ids, labels, 5).lm_loss.item(), trained);  // the same masks again
}

struct Variant {
  const char* name;
  void (*apply)(ModelConfig&);
};

class ModelDropoutGradient : public ::testing::TestWithParam<int> {};

TEST_P(ModelDropoutGradient, WholeModelMatchesFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  ModelConfig config = with_dropout(test::tiny_gpt_config(), 0.25, 0.3);
  if (GetParam() == 1) {  // MLA with an MTP depth (its embedding and layer drop too)
    config.attention_type = AttentionType::mla;
    config.num_query_groups = config.num_attention_heads;
    config.mla = MlaConfig{.q_lora_rank = 6,
                           .kv_lora_rank = 4,
                           .qk_head_dim = 2,
                           .qk_pos_emb_head_dim = 2,
                           .v_head_dim = 3};
    config.mtp_num_layers = 1;
    config.mtp_loss_scaling_factor = 3.0;
  }
  GPTModel model(config, DType::f64, Device::cpu(), seed);
  test::randomize_norms_and_biases(model, seed + 100);
  const Tensor ids = test::random_tokens(5, 2, config.vocab_size, seed + 1);
  const Tensor labels = test::random_labels(5, 2, config.vocab_size, seed + 2, 3);
  model.zero_grad();
  run(model, ids, labels, 3, true);
  test::expect_parameter_gradients([&] { return run(model, ids, labels, 3).loss.item(); },
                                   model.parameters());
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelDropoutGradient, ::testing::Values(0, 1),
                         [](const auto& info) { return info.param == 0 ? "gqa" : "mla_mtp"; });

// A batch of 4 samples starting at sample 10 gives the main loss of its two halves (samples
// 10-11 and 12-13) as separate micro-batches: the masks follow the global sample index.
TEST(ModelDropout, MainLossDoesNotDependOnTheMicroBatchSplit) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const ModelConfig config = with_dropout(test::tiny_gpt_config(), 0.3, 0.3);
  GPTModel model(config, DType::f64, Device::cpu(), seed);
  const Tensor ids = test::random_tokens(6, 4, config.vocab_size, seed + 1);
  const Tensor labels = test::random_tokens(6, 4, config.vocab_size, seed + 2);  // none ignored
  const double whole = run(model, ids, labels, 10).lm_loss.item();
  const double first = run(model, columns(ids, 0, 2), columns(labels, 0, 2), 10).lm_loss.item();
  const double second = run(model, columns(ids, 2, 2), columns(labels, 2, 2), 12).lm_loss.item();
  EXPECT_NEAR(whole, 0.5 * (first + second), 1e-12);
  // The wrong first sample for the second half draws other masks.
  const double shifted = run(model, columns(ids, 2, 2), columns(labels, 2, 2), 11).lm_loss.item();
  EXPECT_GT(std::abs(whole - 0.5 * (first + shifted)), 1e-9);
}

TEST(ModelDropout, ConfigFieldsRoundTripAndAreChecked) {
  ModelConfig c = with_dropout(test::tiny_gpt_config(), 0.1, 0.05);
  const ModelConfig back = model_config_from_json(model_config_to_json(c));
  EXPECT_EQ(back.hidden_dropout, 0.1);
  EXPECT_EQ(back.attention_dropout, 0.05);
  // Absent from a file: 0 (the files written before the fields existed keep training as before).
  nlohmann::json j = model_config_to_json(c);
  j.erase("hidden_dropout");
  j.erase("attention_dropout");
  const ModelConfig old = model_config_from_json(j);
  EXPECT_EQ(old.hidden_dropout, 0.0);
  EXPECT_EQ(old.attention_dropout, 0.0);
  c.hidden_dropout = 1.5;
  EXPECT_NE(test::message_of([&] { c.validate(); }).find("--hidden-dropout"), std::string::npos);
  c.hidden_dropout = 0.1;
  c.attention_dropout = -0.1;
  EXPECT_NE(test::message_of([&] { c.validate(); }).find("--attention-dropout"), std::string::npos);
}

}  // namespace
}  // namespace moe::nn
