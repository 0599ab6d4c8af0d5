// `moe forward`'s pieces: token batches (and their errors), the next-token loss (known answer,
// and the same value as GPTModel's own fused cross-entropy), and the [S, B] <-> [B, S] order.
#include <gtest/gtest.h>

#include <cmath>

#include "checkpoint/checkpoint_testing.h"
#include "moe/checkpoint/forward_eval.h"
#include "moe/nn/model_zoo.h"
#include "moe/ops/cross_entropy.h"
#include "nn/gpt_test_util.h"

namespace moe::checkpoint {
namespace {

using io::testing::fails_with;
using nlohmann::json;

TEST(ForwardEval, TokenBatches) {
  const Tensor ids = parse_token_batch(json::parse("[[1, 2, 3], [4, 5, 6]]"), 7);
  EXPECT_EQ(ids.shape(), (Shape{2, 3}));
  EXPECT_EQ(ids.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(fails_with([] { parse_token_batch(json::parse("[[1, 2], [3]]")); },
                         {"row 1 has 1 ids but row 0 has 2", "ragged"}));
  EXPECT_TRUE(fails_with([] { parse_token_batch(json::parse("[[1, 2], [3, 9]]"), 9); },
                         {"row 1 position 1", "id 9", "[0, 9)"}));
  EXPECT_TRUE(fails_with([] { parse_token_batch(json::parse("[[1, -1]]")); }, {"id -1"}));
  EXPECT_TRUE(fails_with([] { parse_token_batch(json::parse("[[1, 2.5]]")); },
                         {"position 1", "not an integer"}));
  EXPECT_TRUE(fails_with([] { parse_token_batch(json::parse("[1, 2]")); }, {"row 0", "not a list"}));
  EXPECT_TRUE(fails_with([] { parse_token_batch(json::parse("[]")); }, {"non-empty"}));
  EXPECT_TRUE(fails_with([] { parse_token_batch(json::parse("[[]]")); }, {"row 0 is empty"}));
  EXPECT_TRUE(fails_with([] { read_token_batch("/nonexistent/ids.json"); }, {"/nonexistent/ids.json"}));
}

TEST(ForwardEval, NextTokenLossKnownAnswers) {
  // Uniform logits: log V at every predicted position.
  const Tensor ids = Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 0}, {2, 3});
  EXPECT_NEAR(*next_token_loss(Tensor::zeros({2, 3, 5}, DType::f32), ids), std::log(5.0), 1e-12);
  // One row [a, b]: position 0 predicts b from logits z: logsumexp(z) - z[b]; position 1 ignored.
  const Tensor z = Tensor::from_vector<float>({1, 2, 3, 100, -100, 7}, {1, 2, 3});
  const Tensor row = Tensor::from_vector<int64_t>({0, 2}, {1, 2});
  const double expected = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0;
  EXPECT_NEAR(*next_token_loss(z, row), expected, 1e-12);
  EXPECT_FALSE(next_token_loss(Tensor::zeros({2, 1, 5}, DType::f32),
                               Tensor::from_vector<int64_t>({1, 2}, {2, 1}))
                   .has_value());
}

// run_forward's logits are model.logits transposed to [B, S, V], and its loss equals the
// model's own lm_loss with labels = ids shifted left (last position ignored).
TEST(ForwardEval, MatchesTheModelsOwnLoss) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const nn::ModelConfig config = nn::model_zoo("qwen3-moe-tiny");
  nn::GPTModel model(config, DType::f32, Device::cpu(), seed);
  uint64_t tensor_seed = seed;
  for (nn::Parameter* p : model.parameters())
    p->value.copy_(test::random_normal(p->value.shape(), DType::f32, tensor_seed++, Device::cpu(), 0.3));
  const int64_t B = 3, S = 6, V = config.vocab_size;
  const Tensor ids_sb = test::random_tokens(S, B, V, seed);
  const std::vector<int64_t> sb = ids_sb.to_vector<int64_t>();
  std::vector<int64_t> bs(sb.size()), labels(sb.size());
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = 0; b < B; ++b) {
      bs[static_cast<size_t>(b * S + s)] = sb[static_cast<size_t>(s * B + b)];
      labels[static_cast<size_t>(s * B + b)] =
          s + 1 < S ? sb[static_cast<size_t>((s + 1) * B + b)] : ops::kIgnoreIndex;
    }
  const Tensor ids = Tensor::from_vector(bs, {B, S});
  const ForwardResult result = run_forward(model, ids);
  ASSERT_EQ(result.logits.shape(), (Shape{B, S, V}));
  const Tensor sbv = model.logits(ids_sb);
  EXPECT_TRUE(io::testing::same_bytes(result.logits.rows(1, 1).reshape({S, V}).rows(4, 1).clone(),
                                      sbv.rows(4, 1).reshape({B, V}).rows(1, 1).clone()));
  nn::GPTContext ctx;
  const nn::GPTLoss loss = model.forward(ids_sb, Tensor::from_vector(labels, {S, B}), ctx);
  ASSERT_TRUE(result.lm_loss.has_value());
  EXPECT_NEAR(*result.lm_loss, loss.lm_loss.item(), 1e-5 * std::abs(loss.lm_loss.item()));
  EXPECT_TRUE(fails_with([&] { run_forward(model, Tensor::from_vector<int64_t>({0, V}, {1, 2})); },
                         {"position 1", "outside the vocabulary"}));
}

}  // namespace
}  // namespace moe::checkpoint
