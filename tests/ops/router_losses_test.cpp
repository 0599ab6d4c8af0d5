// Router load balancing on the CPU (router.h): histograms, aux-loss scores, aux_loss /
// seq_aux_loss / z_loss (known values, Megatron's uniform-routing value, fp64 finite-difference
// checks of the backward, which accumulates), sinkhorn and sinkhorn routing, input jitter.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "common/check.h"
#include "moe/core/rng.h"
#include "moe/ops/router.h"
#include "ops/router_test_util.h"

namespace moe {
namespace {

using ops::ScoreFunction;

Tensor f64(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape);
}

Tensor ids_of(const std::vector<int32_t>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape);
}

// ---- histograms -----------------------------------------------------------------------------

TEST(RouterHistogram, CountsAndSkipsDroppedSlots) {
  const Tensor ids = ids_of({0, 2, 2, -1, 1, 2}, {3, 2});
  EXPECT_TRUE(test::equal(ops::tokens_per_expert_histogram(ids, 4),
                          Tensor::from_vector<int64_t>({1, 1, 3, 0}, {4})));
  EXPECT_THROW(ops::tokens_per_expert_histogram(ids_of({0, 4}, {1, 2}), 4), Error);
  EXPECT_THROW(ops::tokens_per_expert_histogram(Tensor::zeros({3, 2}, DType::i64), 4), Error);
  EXPECT_EQ(ops::tokens_per_expert_histogram(Tensor::empty({0, 2}, DType::i32), 4).shape(),
            (Shape{4}));
}

TEST(RouterHistogram, PerSequenceUsesTheSBLayout) {
  // S = 3 positions, B = 2 sequences: token t = s * 2 + b
  const Tensor ids = ids_of({0, 1, /*b=1*/ 2, 3, 0, 2, /*b=1*/ 3, 3, 1, -1, /*b=1*/ 2, 0}, {6, 2});
  EXPECT_TRUE(test::equal(ops::tokens_per_expert_per_sequence(ids, 4, 2),
                          Tensor::from_vector<int64_t>({2, 2, 1, 0, 1, 0, 2, 3}, {2, 4})));
  EXPECT_THROW(ops::tokens_per_expert_per_sequence(ids, 4, 4), Error);  // 6 % 4
  EXPECT_THROW(ops::tokens_per_expert_per_sequence(ids, 4, 0), Error);
}

// ---- aux-loss scores and aux loss -------------------------------------------------------------

TEST(RouterAuxLoss, ScoresAreDistributions) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor logits = test::random_normal({7, 5}, DType::f64, seed);
  for (ScoreFunction f : {ScoreFunction::softmax, ScoreFunction::sigmoid}) {
    const Tensor s = ops::aux_loss_scores(logits, f);
    for (int64_t t = 0; t < 7; ++t) {
      const auto z = test::row(logits, t), v = test::row(s, t);
      double sum = 0, ref_sum = 0;
      for (int64_t e = 0; e < 5; ++e) {
        sum += v[e];
        ref_sum += f == ScoreFunction::softmax ? std::exp(z[e]) : 1 / (1 + std::exp(-z[e]));
      }
      EXPECT_NEAR(sum, 1.0, 1e-14);
      for (int64_t e = 0; e < 5; ++e) {
        const double ref = f == ScoreFunction::softmax ? std::exp(z[e]) : 1 / (1 + std::exp(-z[e]));
        EXPECT_NEAR(v[e], ref / ref_sum, 1e-15);
      }
    }
  }
}

TEST(RouterAuxLoss, KnownValue) {
  // P = [1.25, 0.75], c = [2, 0]: L = 0.1 * 2 / (1 * 2^2) * (1.25 * 2) = 0.125
  const Tensor scores = f64({0.75, 0.25, 0.5, 0.5}, {2, 2});
  EXPECT_NEAR(
      ops::aux_loss_forward(scores, Tensor::from_vector<int64_t>({2, 0}, {2}), 2, 1, 0.1).item(),
      0.125, 1e-16);
  // counts may be fractional (global aux loss averages them) and T_total larger than T
  EXPECT_NEAR(ops::aux_loss_forward(scores, f64({1.5, 0.5}, {2}), 4, 2, 1.0).item(),
              2.0 / (2 * 16) * (1.25 * 1.5 + 0.75 * 0.5), 1e-16);
  const Tensor loss = ops::aux_loss_forward(scores.to(DType::f32),
                                            Tensor::from_vector<int32_t>({2, 0}, {2}), 2, 1, 0.1);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_EQ(loss.dtype(), DType::f32);
  EXPECT_NEAR(loss.item(), 0.125, 1e-8);
}

// Megatron: perfectly uniform routing gives an aux loss of exactly 1 (times the coefficient).
TEST(RouterAuxLoss, UniformRoutingGivesTheCoefficient) {
  const int64_t tokens = 16, experts = 8, k = 2;
  const Tensor scores = Tensor::full({tokens, experts}, 1.0 / experts, DType::f64);
  const Tensor counts = Tensor::full({experts}, tokens * k / experts, DType::i64);
  EXPECT_NEAR(ops::aux_loss_forward(scores, counts, tokens, k, 0.01).item(), 0.01, 1e-17);
  const Tensor seq_counts = Tensor::full({4, experts}, tokens / 4 * k / experts, DType::i64);
  EXPECT_NEAR(ops::seq_aux_loss_forward(scores, seq_counts, 4, tokens / 4, k, 0.01).item(), 0.01,
              1e-17);
}

TEST(RouterAuxLoss, SeqAuxLossIsTheMeanOverSequences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t seq = 5, batch = 3, experts = 6, k = 2;
  const Tensor logits = test::random_normal({seq * batch, experts}, DType::f64, seed);
  const Tensor scores = ops::aux_loss_scores(logits, ScoreFunction::softmax);
  const Tensor ids = ops::topk_routing_forward(logits, {}, {k, ScoreFunction::softmax}).expert_ids;
  const Tensor counts = ops::tokens_per_expert_per_sequence(ids, experts, batch);
  const double coeff = 0.3;
  double expected = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t e = 0; e < experts; ++e) {
      double p = 0;
      for (int64_t s = 0; s < seq; ++s) p += test::row(scores, s * batch + b)[e];
      expected += coeff * experts / double(k * seq * seq) * p *
                  double(counts.to_vector<int64_t>()[b * experts + e]) / batch;
    }
  }
  EXPECT_NEAR(ops::seq_aux_loss_forward(scores, counts, batch, seq, k, coeff).item(), expected,
              1e-15);
  // One sequence: the plain aux loss.
  const Tensor one = ops::tokens_per_expert_per_sequence(ids, experts, 1);
  EXPECT_NEAR(ops::seq_aux_loss_forward(scores, one, 1, seq * batch, k, coeff).item(),
              ops::aux_loss_forward(scores, one.reshape({experts}), seq * batch, k, coeff).item(),
              1e-15);
}

// d_logits must accumulate: start from random values and compare the difference.
Tensor accumulated(const std::function<void(Tensor&)>& backward, const Shape& shape,
                   uint64_t seed) {
  const Tensor start = test::random_normal(shape, DType::f64, seed);
  Tensor d = start.clone();
  backward(d);
  std::vector<double> diff = d.to_double_vector();
  const std::vector<double> s = start.to_double_vector();
  for (size_t i = 0; i < diff.size(); ++i) diff[i] -= s[i];
  return f64(diff, shape);
}

TEST(RouterAuxLossGrad, AuxLoss) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 7, experts = 6, k = 2;
  Tensor logits = test::random_normal({tokens, experts}, DType::f64, seed);
  const Tensor counts = Tensor::from_vector<int64_t>({5, 0, 3, 2, 1, 3}, {experts});
  const double coeff = 0.7, grad_loss = 1.9;
  for (ScoreFunction f : {ScoreFunction::softmax, ScoreFunction::sigmoid}) {
    const Tensor scores = ops::aux_loss_scores(logits, f);
    const Tensor analytic = accumulated(
        [&](Tensor& d) {
          ops::aux_loss_backward(grad_loss, scores, counts, 3 * tokens, k, coeff, logits, f, d);
        },
        logits.shape(), seed + 1);
    const Tensor numeric = test::numerical_gradient(
        [&] {
          return grad_loss * ops::aux_loss_forward(ops::aux_loss_scores(logits, f), counts,
                                                   3 * tokens, k, coeff)
                                 .item();
        },
        logits);
    EXPECT_TRUE(test::close(analytic, numeric, test::kGradCheckTol, "d_logits"));
  }
}

TEST(RouterAuxLossGrad, SeqAuxLoss) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t seq = 3, batch = 2, experts = 5, k = 2;
  Tensor logits = test::random_normal({seq * batch, experts}, DType::f64, seed);
  const Tensor counts = f64({2, 0, 1, 2, 1, 0, 3, 1, 1, 1}, {batch, experts});
  const double coeff = 0.4, grad_loss = 0.6;
  for (ScoreFunction f : {ScoreFunction::softmax, ScoreFunction::sigmoid}) {
    const Tensor scores = ops::aux_loss_scores(logits, f);
    const Tensor analytic = accumulated(
        [&](Tensor& d) {
          ops::seq_aux_loss_backward(grad_loss, scores, counts, batch, 2 * seq, k, coeff, logits, f,
                                     d);
        },
        logits.shape(), seed + 1);
    const Tensor numeric = test::numerical_gradient(
        [&] {
          return grad_loss * ops::seq_aux_loss_forward(ops::aux_loss_scores(logits, f), counts,
                                                       batch, 2 * seq, k, coeff)
                                 .item();
        },
        logits);
    EXPECT_TRUE(test::close(analytic, numeric, test::kGradCheckTol, "d_logits"));
  }
}

TEST(RouterAuxLoss, EmptyAndBadInput) {
  const Tensor scores = Tensor::empty({0, 4}, DType::f32);
  const Tensor counts = Tensor::zeros({4}, DType::i64);
  EXPECT_EQ(ops::aux_loss_forward(scores, counts, 0, 2, 0.1).item(), 0.0);
  EXPECT_EQ(ops::aux_loss_forward(scores, counts, 8, 2, 0.1).item(), 0.0);
  Tensor d = Tensor::empty({0, 4}, DType::f32);
  ops::aux_loss_backward(1.0, scores, counts, 0, 2, 0.1, scores, ScoreFunction::softmax, d);
  const Tensor s = Tensor::full({2, 4}, 0.25, DType::f32);
  EXPECT_THROW(ops::aux_loss_forward(s, counts, 0, 2, 0.1), Error);  // T_total = 0
  EXPECT_THROW(ops::aux_loss_forward(s, Tensor::zeros({3}, DType::i64), 2, 2, 0.1), Error);
  EXPECT_THROW(ops::aux_loss_forward(s, Tensor::zeros({4}, DType::u8), 2, 2, 0.1), Error);
  EXPECT_THROW(ops::aux_loss_forward(s, counts, 2, 0, 0.1), Error);  // topk 0
  EXPECT_THROW(ops::seq_aux_loss_forward(s, Tensor::zeros({3, 4}, DType::i64), 3, 2, 2, 0.1),
               Error);  // 2 tokens, 3 sequences
  Tensor wrong = Tensor::zeros({2, 4}, DType::f64);
  EXPECT_THROW(ops::aux_loss_backward(1.0, s, counts, 2, 2, 0.1, s, ScoreFunction::softmax, wrong),
               Error);
}

// ---- z-loss -----------------------------------------------------------------------------------

TEST(RouterZLoss, KnownValue) {
  // zero logits: lse = log E on every token
  EXPECT_NEAR(ops::z_loss_forward(Tensor::zeros({5, 8}, DType::f64), 0.001).item(),
              0.001 * std::log(8.0) * std::log(8.0), 1e-18);
  // rows [0, log 3] and [1, 1]: lse = log 4 and 1 + log 2
  const double l0 = std::log(4.0), l1 = 1 + std::log(2.0);
  EXPECT_NEAR(ops::z_loss_forward(f64({0, std::log(3.0), 1, 1}, {2, 2}), 2.0).item(),
              2.0 * (l0 * l0 + l1 * l1) / 2, 1e-14);
  EXPECT_EQ(ops::z_loss_forward(Tensor::empty({0, 8}, DType::f32), 1.0).item(), 0.0);
}

TEST(RouterZLossGrad, MatchesFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Tensor logits = test::random_normal({6, 9}, DType::f64, seed, Device::cpu(), 3.0);
  const double coeff = 0.01, grad_loss = 3.0;
  const Tensor analytic =
      accumulated([&](Tensor& d) { ops::z_loss_backward(grad_loss, logits, coeff, d); },
                  logits.shape(), seed + 1);
  const Tensor numeric = test::numerical_gradient(
      [&] { return grad_loss * ops::z_loss_forward(logits, coeff).item(); }, logits);
  EXPECT_TRUE(test::close(analytic, numeric, test::kGradCheckTol, "d_logits"));
}

// ---- sinkhorn ---------------------------------------------------------------------------------

TEST(RouterSinkhorn, BalancesTheColumns) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 64, experts = 8;
  const Tensor logits = test::random_normal({tokens, experts}, DType::f64, seed);
  const Tensor p = ops::sinkhorn(logits, 1e-9);
  std::vector<double> column(experts, 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const auto r = test::row(p, t);
    double sum = 0;
    for (int64_t e = 0; e < experts; ++e) {
      sum += r[e];
      column[e] += r[e];
    }
    EXPECT_NEAR(sum * tokens, 1.0, 1e-6);  // converged rows: 1/T
  }
  // columns: 1/E up to the 1e-8 in d1's denominator, (1 - 1e-8 / column) ~ 1 - 1e-7
  for (int64_t e = 0; e < experts; ++e) EXPECT_NEAR(column[e] * experts, 1.0, 1e-6);
}

// Megatron's sinkhorn test: on skewed random logits the sinkhorn assignment is near-balanced
// while the plain top-1 is not.
TEST(RouterSinkhorn, RoutingBalancesSkewedLogits) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 512, experts = 8;
  std::vector<double> z =
      test::random_normal({tokens, experts}, DType::f64, seed).to_double_vector();
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t e = 0; e < experts; ++e) z[t * experts + e] += 0.4 * double(e);  // skew to high e
  const Tensor logits = f64(z, {tokens, experts});
  for (int64_t k : {1, 2}) {
    SCOPED_TRACE(k);
    const auto plain =
        ops::tokens_per_expert_histogram(
            ops::topk_routing_forward(logits, {}, {k, ScoreFunction::sigmoid}).expert_ids, experts)
            .to_vector<int64_t>();
    const auto balanced = ops::tokens_per_expert_histogram(
                              ops::sinkhorn_routing_forward(logits, k).expert_ids, experts)
                              .to_vector<int64_t>();
    const double mean = double(tokens * k) / experts;
    // Over 3000 seeds: plain top-k's busiest expert >= 2.5x the mean; sinkhorn's counts
    // within [0.70, 1.30]x the mean.
    EXPECT_GT(*std::max_element(plain.begin(), plain.end()), 2.0 * mean);
    for (int64_t c : balanced) {
      EXPECT_GT(c, 0.6 * mean);
      EXPECT_LT(c, 1.4 * mean);
    }
  }
}

TEST(RouterSinkhorn, RoutingProbsAreTheActivationOfTheChosen) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor logits = test::random_normal({20, 6}, DType::f64, seed);
  const Tensor sink = ops::sinkhorn(logits);
  for (int64_t k : {1, 3}) {
    const ops::TopKRouting r = ops::sinkhorn_routing_forward(logits, k);
    const auto ids = r.expert_ids.to_vector<int32_t>();
    const auto p = r.probs.to_double_vector();
    for (int64_t t = 0; t < 20; ++t) {
      const std::vector<int64_t> expected = test::reference_topk(test::row(sink, t), k);
      const auto z = test::row(logits, t);
      double norm = 0;
      for (double v : z) norm += std::exp(v);
      for (int64_t j = 0; j < k; ++j) {
        EXPECT_EQ(ids[t * k + j], expected[j]);
        const double zj = z[ids[t * k + j]];
        EXPECT_NEAR(p[t * k + j], k == 1 ? 1 / (1 + std::exp(-zj)) : std::exp(zj) / norm, 1e-15);
      }
    }
  }
}

TEST(RouterSinkhornGrad, MatchesFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t k : {1, 3}) {
    SCOPED_TRACE(k);
    Tensor logits = test::separated_logits(8, 6, seed);
    const ops::TopKRouting routing = ops::sinkhorn_routing_forward(logits, k);
    const Tensor weights = test::random_normal({8, k}, DType::f64, seed + 1);
    const Tensor analytic = ops::sinkhorn_routing_backward(weights, routing, logits, k);
    const auto ids = routing.expert_ids.to_vector<int32_t>();
    int changes = 0;
    const Tensor numeric = test::numerical_gradient(
        [&] {
          const ops::TopKRouting r = ops::sinkhorn_routing_forward(logits, k);
          changes += r.expert_ids.to_vector<int32_t>() != ids;
          return test::dot(r.probs, weights);
        },
        logits);
    EXPECT_EQ(changes, 0);
    EXPECT_TRUE(test::close(analytic, numeric, test::kGradCheckTol, "d_logits"));
  }
}

TEST(RouterSinkhorn, EmptyAndBadInput) {
  const Tensor empty = Tensor::empty({0, 4}, DType::f32);
  EXPECT_EQ(ops::sinkhorn(empty).shape(), (Shape{0, 4}));
  EXPECT_EQ(ops::sinkhorn_routing_forward(empty, 2).probs.shape(), (Shape{0, 2}));
  EXPECT_THROW(ops::sinkhorn(Tensor::zeros({2, 4}, DType::f32), -1.0), Error);
  EXPECT_THROW(ops::sinkhorn(Tensor::zeros({2, 4}, DType::f32), 1e-4, 0), Error);
  EXPECT_THROW(ops::sinkhorn_routing_forward(Tensor::zeros({2, 4}, DType::f32), 5), Error);
}

// ---- input jitter -----------------------------------------------------------------------------

TEST(RouterJitter, NoiseIsBoundedAndReproducible) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const double eps = 0.1;
  const Tensor ones = Tensor::full({4097}, 1.0, DType::f64);
  const auto noise = ops::input_jitter_forward(ones, eps, seed).to_double_vector();
  double mean = 0;
  for (double v : noise) {
    EXPECT_GE(v, static_cast<double>(static_cast<float>(1 - eps)));
    EXPECT_LE(v, static_cast<double>(static_cast<float>(1 + eps)));
    mean += v / noise.size();
  }
  EXPECT_NEAR(mean, 1.0, 0.01);
  EXPECT_GT(*std::max_element(noise.begin(), noise.end()), 1.09);
  EXPECT_LT(*std::min_element(noise.begin(), noise.end()), 0.91);
  // same seed: same noise; another seed: another; the noise is philox_uniform at the flat index
  EXPECT_TRUE(test::equal(ops::input_jitter_forward(ones, eps, seed), f64(noise, {4097})));
  EXPECT_FALSE(test::equal(ops::input_jitter_forward(ones, eps, seed + 1), f64(noise, {4097})));
  for (uint64_t i : {0, 1, 2, 3, 4, 4096})
    EXPECT_EQ(noise[i], static_cast<double>(philox_uniform(seed, i, 0.9f, 1.1f)));
  // eps = 0 is the identity
  const Tensor x = test::random_normal({3, 5}, DType::f32, seed);
  EXPECT_TRUE(test::equal(ops::input_jitter_forward(x, 0.0, seed), x));
}

TEST(RouterJitter, DtypesAndShapes) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor x = test::random_normal({7, 3}, DType::f32, seed);
  const auto noise = ops::input_jitter_forward(Tensor::full({7, 3}, 1.0, DType::f32), 0.2, seed)
                         .to_vector<float>();
  const auto xv = x.to_vector<float>();
  const Tensor y = ops::input_jitter_forward(x, 0.2, seed);
  EXPECT_EQ(y.shape(), x.shape());
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_EQ(y.to_vector<float>()[i], xv[i] * noise[i]);
  for (DType dt : {DType::bf16, DType::f16}) {
    const Tensor xr = x.to(dt);
    const auto xf = xr.to_double_vector();
    std::vector<float> expected(xf.size());
    for (size_t i = 0; i < xf.size(); ++i) expected[i] = static_cast<float>(xf[i]) * noise[i];
    EXPECT_TRUE(test::equal(ops::input_jitter_forward(xr, 0.2, seed),
                            Tensor::from_vector(expected, {7, 3}).to(dt)))
        << dtype_name(dt);
  }
  EXPECT_THROW(ops::input_jitter_forward(x, 1.0, seed), Error);
  EXPECT_THROW(ops::input_jitter_forward(Tensor::zeros({2}, DType::i32), 0.1, seed), Error);
  EXPECT_EQ(ops::input_jitter_forward(Tensor::empty({0, 3}, DType::f32), 0.1, seed).shape(),
            (Shape{0, 3}));
}

TEST(RouterJitterGrad, MatchesFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Tensor x = test::random_normal({5, 7}, DType::f64, seed);
  const Tensor w = test::random_normal({5, 7}, DType::f64, seed + 1);
  const double eps = 0.3;
  const Tensor analytic = ops::input_jitter_backward(w, eps, seed + 2);
  const Tensor numeric = test::numerical_gradient(
      [&] { return test::dot(ops::input_jitter_forward(x, eps, seed + 2), w); }, x);
  EXPECT_TRUE(test::close(analytic, numeric, test::kGradCheckTol, "d_x"));
}

}  // namespace
}  // namespace moe
