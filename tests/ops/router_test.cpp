// Top-k routing on the CPU (router.h): known answers from the formulas, Megatron's router unit
// tests (top-1 pre-softmax, sigmoid probs summing to the scaling factor, expert bias moving
// only the selection, group-limited routing staying in its groups, forced balancing giving the
// uniform aux loss), fp64 finite-difference checks of every backward, and bad input.
#include "moe/ops/router.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "common/check.h"
#include "ops/router_test_util.h"

namespace moe {
namespace {

using ops::ScoreFunction;
using ops::TopKConfig;
using ops::TopKRouting;

using test::make_config;

Tensor f64(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape);
}

double sigmoid(double z) {
  return 1 / (1 + std::exp(-z));
}

// ---- known answers ------------------------------------------------------------------------

TEST(RouterTopK, SoftmaxThenTopKKnownAnswer) {
  const Tensor logits = f64({1, 3, 2, 0}, {1, 4});
  const TopKRouting r =
      ops::topk_routing_forward(logits, {}, make_config(2, ScoreFunction::softmax));
  EXPECT_TRUE(test::equal(r.expert_ids, Tensor::from_vector<int32_t>({1, 2}, {1, 2})));
  const double e = std::exp(1.0);
  EXPECT_TRUE(test::close(r.probs, f64({e / (1 + e), 1 / (1 + e)}, {1, 2}), 1e-15));
  // scores: softmax over all experts
  const double z = 1 + std::exp(-2.0) + std::exp(-1.0) + std::exp(-3.0);
  EXPECT_TRUE(test::close(
      r.scores, f64({std::exp(-2.0) / z, 1 / z, std::exp(-1.0) / z, std::exp(-3.0) / z}, {1, 4}),
      1e-15));
}

TEST(RouterTopK, Top1PreSoftmax) {
  const Tensor logits = f64({0.5, 2, -1, 1.5, -3, 0, 0.25, 0.75}, {2, 4});
  const TopKRouting r =
      ops::topk_routing_forward(logits, {}, make_config(1, ScoreFunction::softmax, true));
  EXPECT_TRUE(test::equal(r.expert_ids, Tensor::from_vector<int32_t>({1, 3}, {2, 1})));
  const double z0 = std::exp(0.5) + std::exp(2.0) + std::exp(-1.0) + std::exp(1.5);
  const double z1 = std::exp(-3.0) + std::exp(0.0) + std::exp(0.25) + std::exp(0.75);
  EXPECT_TRUE(test::close(r.probs, f64({std::exp(2.0) / z0, std::exp(0.75) / z1}, {2, 1}), 1e-15));
}

TEST(RouterTopK, PreSoftmaxIsNotRenormalised) {
  const Tensor logits = f64({1, 3, 2, 0}, {1, 4});
  const TopKRouting r =
      ops::topk_routing_forward(logits, {}, make_config(2, ScoreFunction::softmax, true));
  const std::vector<double> s = test::row(r.scores, 0);
  EXPECT_TRUE(test::close(r.probs, f64({s[1], s[2]}, {1, 2}), 1e-15));
  EXPECT_LT(s[1] + s[2], 0.95);
}

TEST(RouterTopK, TiesGoToTheLowerExpertIndex) {
  const Tensor logits = f64({1, 1, 1, 1, 0, 2, 2, 0}, {2, 4});
  for (ScoreFunction f : {ScoreFunction::softmax, ScoreFunction::sigmoid}) {
    const TopKRouting r = ops::topk_routing_forward(logits, {}, make_config(2, f));
    EXPECT_TRUE(test::equal(r.expert_ids, Tensor::from_vector<int32_t>({0, 1, 1, 2}, {2, 2})));
    EXPECT_TRUE(test::close(r.probs, f64({0.5, 0.5, 0.5, 0.5}, {2, 2}), 1e-15));
  }
  // ... also when the bias creates the tie, and between groups of equal score.
  const Tensor bias = f64({0, 0.5, 0.5, 0}, {4});
  const TopKRouting biased = ops::topk_routing_forward(f64({0, 0, 0, 0}, {1, 4}), bias,
                                                       make_config(1, ScoreFunction::sigmoid));
  EXPECT_EQ(biased.expert_ids.to_vector<int32_t>()[0], 1);
  const TopKRouting grouped = ops::topk_routing_forward(
      f64({1, 0, 0, 1}, {1, 4}), {}, make_config(1, ScoreFunction::sigmoid, false, 2, 1));
  EXPECT_EQ(grouped.expert_ids.to_vector<int32_t>()[0], 0);
}

TEST(RouterTopK, IdsAreInDescendingScoreOrder) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor logits = test::random_normal({33, 16}, DType::f64, seed);
  for (ScoreFunction f : {ScoreFunction::softmax, ScoreFunction::sigmoid}) {
    const TopKRouting r = ops::topk_routing_forward(logits, {}, make_config(5, f));
    const auto ids = r.expert_ids.to_vector<int32_t>();
    for (int64_t t = 0; t < 33; ++t) {
      const std::vector<int64_t> expected = test::reference_topk(test::row(logits, t), 5);
      for (int64_t j = 0; j < 5; ++j) EXPECT_EQ(ids[t * 5 + j], expected[j]) << t << "," << j;
    }
  }
}

TEST(RouterTopK, SigmoidProbsSumToTheScalingFactor) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor logits = test::random_normal({17, 12}, DType::f64, seed);
  const TopKRouting r = ops::topk_routing_forward(
      logits, {}, make_config(4, ScoreFunction::sigmoid, false, 0, 0, 2.5));
  const auto p = r.probs.to_double_vector();
  const auto ids = r.expert_ids.to_vector<int32_t>();
  for (int64_t t = 0; t < 17; ++t) {
    double sum = 0, sig_sum = 0;
    for (int64_t j = 0; j < 4; ++j) {
      sum += p[t * 4 + j];
      sig_sum += sigmoid(test::row(logits, t)[ids[t * 4 + j]]);
    }
    EXPECT_NEAR(sum, 2.5, 1e-13);
    for (int64_t j = 0; j < 4; ++j)  // p = 2.5 s / sum s
      EXPECT_NEAR(p[t * 4 + j], 2.5 * sigmoid(test::row(logits, t)[ids[t * 4 + j]]) / sig_sum,
                  1e-14);
  }
  // Top-1 sigmoid is not normalised: p = scaling * sigmoid(z_max).
  const TopKRouting top1 = ops::topk_routing_forward(
      logits, {}, make_config(1, ScoreFunction::sigmoid, false, 0, 0, 2.5));
  for (int64_t t = 0; t < 17; ++t) {
    const auto z = test::row(logits, t);
    EXPECT_NEAR(top1.probs.to_double_vector()[t],
                2.5 * sigmoid(*std::max_element(z.begin(), z.end())), 1e-14);
  }
}

TEST(RouterTopK, ScalingFactorScalesEveryVariant) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor logits = test::random_normal({9, 8}, DType::f64, seed);
  const Tensor bias = test::random_normal({8}, DType::f64, seed + 1, Device::cpu(), 0.1);
  for (ScoreFunction f : {ScoreFunction::softmax, ScoreFunction::sigmoid}) {
    for (bool pre : {false, true}) {
      if (pre && f == ScoreFunction::sigmoid) continue;
      for (bool with_bias : {false, true}) {
        TopKConfig c = make_config(3, f, pre, 4, 2);
        const Tensor b = with_bias ? bias : Tensor();
        const TopKRouting plain = ops::topk_routing_forward(logits, b, c);
        c.scaling_factor = 2.5;
        const TopKRouting scaled = ops::topk_routing_forward(logits, b, c);
        EXPECT_TRUE(test::equal(scaled.expert_ids, plain.expert_ids));
        std::vector<double> expected = plain.probs.to_double_vector();
        for (double& v : expected) v *= 2.5;
        EXPECT_TRUE(test::close(scaled.probs, f64(expected, plain.probs.shape()), 1e-15));
      }
    }
  }
}

// Megatron's expert-bias test: the bias decides the selection, the probs come from the scores
// of the selected experts alone.
TEST(RouterTopK, ExpertBiasChangesSelectionButNotProbs) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 32, experts = 8, k = 2;
  const Tensor logits = test::random_normal({tokens, experts}, DType::f64, seed);
  std::vector<double> bias_values(experts, 0.0);
  bias_values[5] = 10.0;  // expert 5 always wins the selection
  const Tensor bias = f64(bias_values, {experts});
  for (ScoreFunction f : {ScoreFunction::sigmoid, ScoreFunction::softmax}) {
    SCOPED_TRACE(f == ScoreFunction::sigmoid ? "sigmoid" : "softmax");
    const TopKRouting plain = ops::topk_routing_forward(logits, {}, make_config(k, f));
    const TopKRouting biased = ops::topk_routing_forward(logits, bias, make_config(k, f));
    const auto ids = biased.expert_ids.to_vector<int32_t>();
    const auto plain_ids = plain.expert_ids.to_vector<int32_t>();
    const auto p = biased.probs.to_double_vector();
    int changed = 0;
    for (int64_t t = 0; t < tokens; ++t) {
      EXPECT_EQ(ids[t * k], 5);
      // the second choice is the best of the rest by score alone
      std::vector<double> z = test::row(logits, t);
      z[5] = -INFINITY;
      EXPECT_EQ(ids[t * k + 1], test::reference_topk(z, 1)[0]);
      changed += (ids[t * k] != plain_ids[t * k] || ids[t * k + 1] != plain_ids[t * k + 1]);
      // probs: the scores of the chosen experts, renormalised; the bias is not in them
      const std::vector<double> s = test::row(biased.scores, t);
      const double sum = s[ids[t * k]] + s[ids[t * k + 1]];
      EXPECT_NEAR(p[t * k], s[ids[t * k]] / sum, 1e-15);
      EXPECT_NEAR(p[t * k + 1], s[ids[t * k + 1]] / sum, 1e-15);
    }
    EXPECT_GT(changed, 0) << "the bias never changed the selection";
    // A bias equal for every expert changes nothing at all.
    const TopKRouting flat = ops::topk_routing_forward(
        logits, Tensor::full({experts}, 0.3, DType::f32), make_config(k, f));
    EXPECT_TRUE(test::equal(flat.expert_ids, plain.expert_ids));
    // (softmax: s[I] / sum s[I] = softmax(z[I]), the unbiased rule, up to rounding)
    EXPECT_TRUE(test::close(flat.probs, plain.probs, 1e-14));
  }
}

TopKConfig with_group_score(TopKConfig config, int64_t size) {
  config.group_score_size = size;
  return config;
}

// Megatron's group-limited test: no expert outside the kept groups is ever chosen.
TEST(RouterTopK, GroupLimitedRoutingStaysInTheKeptGroups) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 64, experts = 16, groups = 4, group_topk = 2, k = 4;
  const Tensor logits = test::random_normal({tokens, experts}, DType::f64, seed);
  const Tensor bias = test::random_normal({experts}, DType::f64, seed + 1, Device::cpu(), 0.2);
  struct Case {
    const char* name;
    TopKConfig config;
    bool with_bias;
  };
  const Case cases[] = {
      {"softmax", make_config(k, ScoreFunction::softmax, false, groups, group_topk), false},
      {"pre-softmax", make_config(k, ScoreFunction::softmax, true, groups, group_topk), false},
      {"sigmoid", make_config(k, ScoreFunction::sigmoid, false, groups, group_topk), false},
      {"sigmoid+bias", make_config(k, ScoreFunction::sigmoid, false, groups, group_topk), true},
      // DeepSeek-V2's group_limited_greedy: a group ranks by its best expert.
      {"softmax, group score = max", with_group_score(make_config(k, ScoreFunction::softmax, true,
                                                                  groups, group_topk), 1), false},
      {"sigmoid+bias, group score = top 3",
       with_group_score(make_config(k, ScoreFunction::sigmoid, false, groups, group_topk), 3), true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const TopKRouting r =
        ops::topk_routing_forward(logits, c.with_bias ? bias : Tensor(), c.config);
    TopKConfig ungrouped = c.config;
    ungrouped.num_groups = ungrouped.group_topk = 0;
    const auto plain_ids =
        ops::topk_routing_forward(logits, c.with_bias ? bias : Tensor(), ungrouped)
            .expert_ids.to_vector<int32_t>();
    const auto ids = r.expert_ids.to_vector<int32_t>();
    int differs = 0;
    for (int64_t t = 0; t < tokens; ++t) {
      // The selection values Megatron's group top-k sees: logits, or scores (+ bias).
      std::vector<double> sel =
          c.config.score_function == ScoreFunction::softmax && !c.config.pre_softmax
              ? test::row(logits, t)
              : test::row(r.scores, t);
      if (c.with_bias)
        for (int64_t e = 0; e < experts; ++e) sel[e] += bias.to_double_vector()[e];
      const std::vector<bool> kept = test::reference_kept_experts(sel, groups, group_topk, k,
                                                                  c.config.group_score_size);
      const std::vector<int64_t> expected = test::reference_topk(sel, k, kept);
      std::set<int64_t> kept_groups;
      for (int64_t j = 0; j < k; ++j) {
        EXPECT_TRUE(kept[ids[t * k + j]]) << "token " << t << " chose expert " << ids[t * k + j];
        EXPECT_EQ(ids[t * k + j], expected[j]) << "token " << t;
        kept_groups.insert(ids[t * k + j] / (experts / groups));
        differs += ids[t * k + j] != plain_ids[t * k + j];
      }
      EXPECT_LE(static_cast<int64_t>(kept_groups.size()), group_topk);
    }
    EXPECT_GT(differs, 0) << "group limiting never mattered: the test could not fail";
  }
}

TEST(RouterTopK, ForcedBalancedRoutingIsUniformAndGivesTheUnitAuxLoss) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 12, experts = 8, k = 2;
  const Tensor logits = test::random_normal({tokens, experts}, DType::f64, seed);
  for (ScoreFunction f : {ScoreFunction::softmax, ScoreFunction::sigmoid}) {
    const TopKRouting r = ops::forced_balanced_routing_forward(logits, make_config(k, f));
    const auto ids = r.expert_ids.to_vector<int32_t>();
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < k; ++j) EXPECT_EQ(ids[t * k + j], (t * k + j) % experts);
    const Tensor counts = ops::tokens_per_expert_histogram(r.expert_ids, experts);
    EXPECT_TRUE(test::equal(counts, Tensor::full({experts}, 3, DType::i64)));
    const Tensor scores = ops::aux_loss_scores(logits, f);
    const double coeff = 0.01;
    const double loss = ops::aux_loss_forward(scores, counts, tokens, k, coeff).item();
    EXPECT_NEAR(loss, coeff, 1e-15);
    // probs: the score function's rule on the forced experts (here: they sum to 1)
    const auto p = r.probs.to_double_vector();
    for (int64_t t = 0; t < tokens; ++t) EXPECT_NEAR(p[t * k] + p[t * k + 1], 1.0, 1e-14);
  }
  // pre-softmax: the softmax over all experts, gathered
  const TopKRouting pre =
      ops::forced_balanced_routing_forward(logits, make_config(k, ScoreFunction::softmax, true));
  const auto ids = pre.expert_ids.to_vector<int32_t>();
  for (int64_t t = 0; t < tokens; ++t)
    EXPECT_NEAR(pre.probs.to_double_vector()[t * k], test::row(pre.scores, t)[ids[t * k]], 1e-15);
}

TEST(RouterTopK, F32MatchesF64) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor logits64 = test::separated_logits(40, 16, seed);
  const Tensor logits32 = logits64.to(DType::f32);
  const Tensor bias = test::random_normal({16}, DType::f32, seed + 1, Device::cpu(), 0.1);
  const TopKConfig configs[] = {make_config(2, ScoreFunction::softmax),
                                make_config(3, ScoreFunction::softmax, true, 4, 2),
                                make_config(4, ScoreFunction::sigmoid, false, 8, 2, 2.5)};
  for (const TopKConfig& c : configs) {
    const TopKRouting a = ops::topk_routing_forward(logits32, bias, c);
    const TopKRouting b =
        ops::topk_routing_forward(logits64.to(DType::f32).to(DType::f64), bias, c);
    EXPECT_TRUE(test::equal(a.expert_ids, b.expert_ids));
    EXPECT_TRUE(test::close_as(a.probs, b.probs, DType::f32));
    EXPECT_TRUE(test::close_as(a.scores, b.scores, DType::f32));
    const Tensor g = test::random_normal({40, c.topk}, DType::f32, seed + 2);
    EXPECT_TRUE(test::close_as(
        ops::topk_routing_backward(g, a, logits32, c),
        ops::topk_routing_backward(g.to(DType::f64), b, logits32.to(DType::f64), c), DType::f32));
  }
}

TEST(RouterTopK, EmptyInput) {
  const Tensor logits = Tensor::empty({0, 8}, DType::f32);
  const TopKConfig c = make_config(2, ScoreFunction::sigmoid, false, 4, 2);
  const TopKRouting r = ops::topk_routing_forward(logits, {}, c);
  EXPECT_EQ(r.probs.shape(), (Shape{0, 2}));
  EXPECT_EQ(r.expert_ids.shape(), (Shape{0, 2}));
  EXPECT_EQ(r.scores.shape(), (Shape{0, 8}));
  const Tensor d = ops::topk_routing_backward(Tensor::empty({0, 2}, DType::f32), r, logits, c);
  EXPECT_EQ(d.shape(), (Shape{0, 8}));
  EXPECT_EQ(ops::forced_balanced_routing_forward(logits, c).probs.shape(), (Shape{0, 2}));
}

// ---- finite-difference checks of the backward ---------------------------------------------

void expect_topk_gradient(const TopKConfig& config, bool with_bias, bool forced, uint64_t seed,
                          int64_t tokens = 6, int64_t experts = 16) {
  Tensor logits = test::separated_logits(tokens, experts, seed);
  const Tensor bias = with_bias
                          ? test::random_normal({experts}, DType::f64, seed + 1, Device::cpu(), 0.1)
                          : Tensor();
  auto route = [&] {
    return forced ? ops::forced_balanced_routing_forward(logits, config)
                  : ops::topk_routing_forward(logits, bias, config);
  };
  const TopKRouting routing = route();
  const Tensor weights = test::random_normal({tokens, config.topk}, DType::f64, seed + 2);
  const Tensor analytic = ops::topk_routing_backward(weights, routing, logits, config);
  const std::vector<int32_t> ids = routing.expert_ids.to_vector<int32_t>();
  int selection_changes = 0;
  const Tensor numeric = test::numerical_gradient(
      [&] {
        const TopKRouting r = route();
        selection_changes += r.expert_ids.to_vector<int32_t>() != ids;
        return test::dot(r.probs, weights);
      },
      logits);
  EXPECT_EQ(selection_changes, 0) << "a perturbation changed the selection";
  EXPECT_TRUE(test::close(analytic, numeric, test::kGradCheckTol, "d_logits"));
}

TEST(RouterTopKGrad, Softmax) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t k : {1, 2, 3}) {
    SCOPED_TRACE(k);
    expect_topk_gradient(make_config(k, ScoreFunction::softmax), false, false, seed);
    expect_topk_gradient(make_config(k, ScoreFunction::softmax, false, 0, 0, 2.5), false, false,
                         seed);
  }
}

TEST(RouterTopKGrad, PreSoftmax) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t k : {1, 3}) {
    SCOPED_TRACE(k);
    expect_topk_gradient(make_config(k, ScoreFunction::softmax, true), false, false, seed);
    expect_topk_gradient(make_config(k, ScoreFunction::softmax, true, 0, 0, 2.5), false, false,
                         seed);
  }
}

TEST(RouterTopKGrad, Sigmoid) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t k : {1, 3}) {
    SCOPED_TRACE(k);
    expect_topk_gradient(make_config(k, ScoreFunction::sigmoid), false, false, seed);
    expect_topk_gradient(make_config(k, ScoreFunction::sigmoid, false, 0, 0, 2.5), false, false,
                         seed);
  }
}

TEST(RouterTopKGrad, ExpertBias) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t k : {1, 2, 4}) {
    SCOPED_TRACE(k);
    expect_topk_gradient(make_config(k, ScoreFunction::sigmoid, false, 0, 0, 2.5), true, false,
                         seed);
    expect_topk_gradient(make_config(k, ScoreFunction::softmax), true, false, seed);
  }
}

TEST(RouterTopKGrad, GroupLimited) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  expect_topk_gradient(make_config(4, ScoreFunction::softmax, false, 4, 2), false, false, seed);
  expect_topk_gradient(make_config(4, ScoreFunction::softmax, true, 4, 2, 2.5), false, false, seed);
  expect_topk_gradient(make_config(4, ScoreFunction::sigmoid, false, 8, 2), false, false, seed);
  // DeepSeek-V3's recipe in miniature: sigmoid + bias, groups, scaling factor.
  expect_topk_gradient(make_config(4, ScoreFunction::sigmoid, false, 4, 2, 2.5), true, false, seed);
  expect_topk_gradient(make_config(3, ScoreFunction::softmax, false, 4, 3), true, false, seed);
  expect_topk_gradient(make_config(3, ScoreFunction::sigmoid, false, 16, 3), false, false, seed);
}

TEST(RouterTopKGrad, ForcedBalanced) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  expect_topk_gradient(make_config(2, ScoreFunction::softmax), false, true, seed);
  expect_topk_gradient(make_config(2, ScoreFunction::softmax, true), false, true, seed);
  expect_topk_gradient(make_config(3, ScoreFunction::sigmoid, false, 0, 0, 2.5), false, true, seed);
  expect_topk_gradient(make_config(1, ScoreFunction::sigmoid), false, true, seed);
}

// ---- bad input ----------------------------------------------------------------------------

TEST(RouterTopK, RejectsBadInput) {
  const Tensor logits = Tensor::zeros({4, 8}, DType::f32);
  auto route = [&](const TopKConfig& c) { return ops::topk_routing_forward(logits, {}, c); };
  EXPECT_THROW(route(make_config(0, ScoreFunction::softmax)), Error);
  EXPECT_THROW(route(make_config(9, ScoreFunction::softmax)), Error);
  EXPECT_THROW(route(make_config(2, ScoreFunction::sigmoid, true)), Error);
  EXPECT_THROW(route(make_config(2, ScoreFunction::softmax, false, 3, 1)), Error);  // 8 % 3
  EXPECT_THROW(route(make_config(2, ScoreFunction::softmax, false, 4, 5)), Error);  // > groups
  EXPECT_THROW(route(make_config(2, ScoreFunction::softmax, false, 4, 3)), Error);  // > topk
  EXPECT_THROW(route(make_config(6, ScoreFunction::softmax, false, 4, 1)), Error);  // 6 > 2
  EXPECT_THROW(route(make_config(2, ScoreFunction::softmax, false, 0, 1)), Error);
  EXPECT_THROW(route(make_config(2, ScoreFunction::softmax, false, 0, 0, 0.0)), Error);
  EXPECT_THROW(ops::topk_routing_forward(Tensor::zeros({4, 8}, DType::bf16), {},
                                         make_config(2, ScoreFunction::softmax)),
               Error);
  EXPECT_THROW(ops::topk_routing_forward(Tensor::zeros({8}, DType::f32), {},
                                         make_config(2, ScoreFunction::softmax)),
               Error);
  EXPECT_THROW(ops::topk_routing_forward(logits, Tensor::zeros({7}, DType::f32),
                                         make_config(2, ScoreFunction::sigmoid)),
               Error);
  EXPECT_THROW(ops::topk_routing_forward(logits, Tensor::zeros({8}, DType::i32),
                                         make_config(2, ScoreFunction::sigmoid)),
               Error);
  const TopKConfig c = make_config(2, ScoreFunction::softmax);
  const TopKRouting r = route(c);
  EXPECT_THROW(ops::topk_routing_backward(Tensor::zeros({4, 3}, DType::f32), r, logits, c), Error);
  EXPECT_THROW(ops::topk_routing_backward(Tensor::zeros({4, 2}, DType::f64), r, logits, c), Error);
  EXPECT_THROW(ops::topk_routing_backward(Tensor::zeros({5, 2}, DType::f32), r, logits, c), Error);
  EXPECT_THROW(ops::forced_balanced_routing_forward(logits, make_config(9, ScoreFunction::softmax)),
               Error);
}

}  // namespace
}  // namespace moe
