// Fused linear + cross-entropy on the CPU: fp64 finite-difference gradients (ignored labels, a
// loss mask, both reductions), known answers (uniform logits give log V, a hand-computed case),
// all labels ignored (zeros, no NaN), vocabulary shards combined equal the whole, dW
// accumulation, logits at the 1e4 scale, bf16 computed in f32, empty input, errors.
#include "moe/ops/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/check.h"
#include "moe/ops/elementwise.h"

namespace moe::ops {
namespace {

constexpr int64_t kIgnore = kIgnoreIndex;

// Random labels in [0, vocab) with every `ignore_every`-th token ignored (0 = none).
std::vector<int64_t> random_labels(int64_t tokens, int64_t vocab, uint64_t seed,
                                   int64_t ignore_every) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, vocab - 1);
  std::vector<int64_t> y(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t)
    y[t] = ignore_every > 0 && t % ignore_every == 1 ? kIgnore : dist(gen);
  return y;
}

Tensor labels_tensor(const std::vector<int64_t>& y, DType dtype = DType::i64) {
  const Tensor t = Tensor::from_vector(y, {static_cast<int64_t>(y.size())});
  return dtype == DType::i64 ? t : t.to(dtype);
}

// A loss mask in [0.5, 2] with token 3 masked out.
Tensor random_mask(int64_t tokens, uint64_t seed) {
  Tensor mask = test::random_uniform({tokens}, DType::f32, seed, 0.5, 2.0);
  if (tokens > 3) mask.data<float>()[3] = 0.0f;
  return mask;
}

TEST(LinearCrossEntropy, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 7, hidden_size = 5, vocab = 37;
  const double grad_loss = 0.7;
  for (bool with_mask : {true, false}) {
    for (CrossEntropyReduction reduction :
         {CrossEntropyReduction::mean, CrossEntropyReduction::sum}) {
      for (DType label_dtype : {DType::i64, DType::i32}) {
        SCOPED_TRACE(testing::Message()
                     << (with_mask ? "mask" : "no mask") << " "
                     << (reduction == CrossEntropyReduction::mean ? "mean" : "sum") << " "
                     << label_dtype);
        Tensor h = test::random_normal({tokens, hidden_size}, DType::f64, seed, Device::cpu(), 1.5);
        Tensor w = test::random_normal({vocab, hidden_size}, DType::f64, seed + 1);
        const Tensor y = labels_tensor(random_labels(tokens, vocab, seed + 2, 3), label_dtype);
        const Tensor mask = with_mask ? random_mask(tokens, seed + 3) : Tensor();
        CrossEntropyOptions options;
        options.reduction = reduction;
        auto loss = [&] {
          return linear_cross_entropy_forward(h, w, y, mask, options).loss.item();
        };
        const CrossEntropyResult saved = linear_cross_entropy_forward(h, w, y, mask, options);
        EXPECT_EQ(saved.loss.dtype(), DType::f64);
        EXPECT_EQ(saved.loss.dim(), 0);
        Tensor dw = Tensor::zeros({vocab, hidden_size}, DType::f64);
        const Tensor dh =
            linear_cross_entropy_backward(grad_loss, h, w, y, mask, saved, dw, options);
        Tensor expected_dh = test::numerical_gradient(loss, h);
        scale_(expected_dh, grad_loss);
        Tensor expected_dw = test::numerical_gradient(loss, w);
        scale_(expected_dw, grad_loss);
        EXPECT_TRUE(test::close(dh, expected_dh, test::kGradCheckTol, "dh"));
        EXPECT_TRUE(test::close(dw, expected_dw, test::kGradCheckTol, "dW"));
      }
    }
  }
}

// Hand-computed: T = 3, V = 3, H = 2, token 1 ignored, mask weights (2, 9, 0.5).
TEST(LinearCrossEntropy, KnownAnswer) {
  const Tensor h = Tensor::from_vector(std::vector<double>{1, 0, 0, 1, 1, -1}, {3, 2});
  const Tensor w = Tensor::from_vector(std::vector<double>{1, 2, -1, 0, 0.5, 0.5}, {3, 2});
  // logits: token 0 -> (1, -1, 0.5); token 2 -> (-1, -1, 0).
  const Tensor y = labels_tensor({2, kIgnore, 0});
  const Tensor mask = Tensor::from_vector(std::vector<float>{2, 9, 0.5}, {3});
  const double lse0 = std::log(std::exp(1.0) + std::exp(-1.0) + std::exp(0.5));
  const double lse2 = std::log(2 * std::exp(-1.0) + 1.0);
  const double l0 = lse0 - 0.5, l2 = lse2 + 1.0;
  const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, mask);
  EXPECT_NEAR(r.loss.item(), (2 * l0 + 0.5 * l2) / 2.5, 1e-14);
  EXPECT_NEAR(r.weight_sum.item(), 2.5, 1e-15);
  EXPECT_TRUE(test::close_as(r.token_losses,
                             Tensor::from_vector(std::vector<double>{l0, 0, l2}, {3}), DType::f64));
  EXPECT_NEAR(r.logsumexp.to_double_vector()[0], lse0, 1e-14);
  EXPECT_NEAR(r.logsumexp.to_double_vector()[2], lse2, 1e-14);
  CrossEntropyOptions sum;
  sum.reduction = CrossEntropyReduction::sum;
  EXPECT_NEAR(linear_cross_entropy_forward(h, w, y, mask, sum).loss.item(), 2 * l0 + 0.5 * l2,
              1e-14);
  // Without a mask every labelled token weighs 1.
  EXPECT_NEAR(linear_cross_entropy_forward(h, w, y, Tensor()).loss.item(), (l0 + l2) / 2, 1e-14);
  EXPECT_TRUE(test::close_as(linear_cross_entropy_per_token(h, w, y), r.token_losses, DType::f64));
}

// h = 0: every logit is 0, so lse = log V, loss = log V; dW = dz^T h = 0 and
// dh_t = g / N (mean_v W_v - W_{y_t}).
TEST(LinearCrossEntropy, UniformLogitsGiveLogV) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 6, hidden_size = 4, vocab = 11;
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor h = Tensor::zeros({tokens, hidden_size}, dt);
    const Tensor w = test::random_normal({vocab, hidden_size}, DType::f64, seed).to(dt);
    const std::vector<int64_t> labels = random_labels(tokens, vocab, seed + 1, 4);
    const Tensor y = labels_tensor(labels);
    const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, Tensor());
    EXPECT_NEAR(r.loss.item(), std::log(double(vocab)), 1e-6);
    for (double lse : r.logsumexp.to_double_vector())
      EXPECT_NEAR(lse, std::log(double(vocab)), 1e-6);
    Tensor dw = Tensor::zeros({vocab, hidden_size}, dt);
    const double g = 2.0;
    const Tensor dh = linear_cross_entropy_backward(g, h, w, y, Tensor(), r, dw);
    EXPECT_TRUE(test::equal(dw, Tensor::zeros({vocab, hidden_size}, dt)));
    const std::vector<double> wv = w.to_double_vector();
    double n = 0;
    for (int64_t l : labels) n += l != kIgnore;
    std::vector<double> expected(static_cast<size_t>(tokens * hidden_size), 0.0);
    for (int64_t t = 0; t < tokens; ++t) {
      if (labels[t] == kIgnore) continue;
      for (int64_t k = 0; k < hidden_size; ++k) {
        double mean = 0;
        for (int64_t v = 0; v < vocab; ++v) mean += wv[v * hidden_size + k] / double(vocab);
        expected[t * hidden_size + k] = g / n * (mean - wv[labels[t] * hidden_size + k]);
      }
    }
    EXPECT_TRUE(
        test::close_as(dh, Tensor::from_vector(expected, {tokens, hidden_size}).to(dt), dt));
  }
}

TEST(LinearCrossEntropy, AllIgnoredGivesZeroLossAndGradients) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 5, hidden_size = 3, vocab = 9;
  const Tensor h = test::random_normal({tokens, hidden_size}, DType::f32, seed);
  const Tensor w = test::random_normal({vocab, hidden_size}, DType::f32, seed + 1);
  const Tensor dw0 = test::random_normal({vocab, hidden_size}, DType::f32, seed + 2);
  const Tensor all_ignored = labels_tensor(std::vector<int64_t>(tokens, kIgnore));
  const Tensor labelled = labels_tensor(random_labels(tokens, vocab, seed + 3, 0));
  const Tensor zero_mask = Tensor::zeros({tokens}, DType::f32);
  for (CrossEntropyReduction reduction :
       {CrossEntropyReduction::mean, CrossEntropyReduction::sum}) {
    CrossEntropyOptions options;
    options.reduction = reduction;
    // All labels ignored, or every token masked out: nothing counts.
    for (bool by_mask : {false, true}) {
      SCOPED_TRACE(by_mask ? "mask all zero" : "all labels ignored");
      const Tensor& y = by_mask ? labelled : all_ignored;
      const Tensor& mask = by_mask ? zero_mask : Tensor();
      const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, mask, options);
      EXPECT_EQ(r.loss.item(), 0.0);
      EXPECT_EQ(r.weight_sum.item(), 0.0);
      if (!by_mask) {
        EXPECT_TRUE(test::equal(r.token_losses, Tensor::zeros({tokens}, DType::f32)));
      }
      Tensor dw = dw0.clone();
      const Tensor dh = linear_cross_entropy_backward(1.0, h, w, y, mask, r, dw, options);
      EXPECT_TRUE(test::equal(dh, Tensor::zeros({tokens, hidden_size}, DType::f32)));
      EXPECT_TRUE(test::equal(dw, dw0));
    }
  }
}

// Shards [0, 10), [10, 10) (empty) and [10, 37) combined equal the whole vocabulary; the
// shards' dh add up to the whole dh and their dW rows are the whole dW's.
TEST(LinearCrossEntropy, VocabShardsCombineToTheWhole) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 7, hidden_size = 5, vocab = 37;
  const Tensor h = test::random_normal({tokens, hidden_size}, DType::f64, seed, Device::cpu(), 2.0);
  const Tensor w = test::random_normal({vocab, hidden_size}, DType::f64, seed + 1);
  const Tensor y = labels_tensor(random_labels(tokens, vocab, seed + 2, 3));
  const Tensor mask = random_mask(tokens, seed + 3);
  const CrossEntropyResult whole = linear_cross_entropy_forward(h, w, y, mask);
  Tensor dw_whole = Tensor::zeros({vocab, hidden_size}, DType::f64);
  const Tensor dh_whole = linear_cross_entropy_backward(0.9, h, w, y, mask, whole, dw_whole);

  const std::vector<std::pair<int64_t, int64_t>> ranges{{0, 10}, {10, 0}, {10, 27}};
  std::vector<CrossEntropyPartials> shards;
  for (auto [start, count] : ranges)
    shards.push_back(linear_cross_entropy_partials(h, w.rows(start, count), y, start));
  EXPECT_EQ(shards[1].max.to_double_vector()[0], -INFINITY);
  const CrossEntropyResult combined = cross_entropy_combine(shards, y, mask, vocab);
  EXPECT_TRUE(test::close_as(combined.loss, whole.loss, DType::f64, "loss"));
  EXPECT_TRUE(test::close_as(combined.logsumexp, whole.logsumexp, DType::f64, "lse"));
  EXPECT_TRUE(test::close_as(combined.token_losses, whole.token_losses, DType::f64, "l_t"));
  EXPECT_TRUE(test::close_as(combined.weight_sum, whole.weight_sum, DType::f64, "N"));

  Tensor dh_sum = Tensor::zeros({tokens, hidden_size}, DType::f64);
  for (auto [start, count] : ranges) {
    Tensor dw = Tensor::zeros({count, hidden_size}, DType::f64);
    const Tensor dh = linear_cross_entropy_backward(0.9, h, w.rows(start, count), y, mask, combined,
                                                    dw, {}, start);
    add_(dh_sum, dh);
    EXPECT_TRUE(test::close_as(dw, dw_whole.rows(start, count), DType::f64, "dW shard"));
  }
  EXPECT_TRUE(test::close_as(dh_sum, dh_whole, DType::f64, "sum of shards' dh"));
}

TEST(LinearCrossEntropy, GradWeightAccumulatesAndGradHiddenIsWritten) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor h = test::random_normal({9, 6}, DType::f64, seed);
  const Tensor w = test::random_normal({13, 6}, DType::f64, seed + 1);
  const Tensor y = labels_tensor(random_labels(9, 13, seed + 2, 4));
  const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, Tensor());
  Tensor once = Tensor::zeros({13, 6}, DType::f64);
  const Tensor dh1 = linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, once);
  Tensor twice = Tensor::zeros({13, 6}, DType::f64);
  linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, twice);
  const Tensor dh2 = linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, twice);
  Tensor expected = once.clone();
  scale_(expected, 2.0);
  EXPECT_TRUE(test::close_as(twice, expected, DType::f64, "dW after two calls"));
  EXPECT_TRUE(test::close_as(dh2, dh1, DType::f64, "dh is written, not accumulated"));
  // An undefined grad_weight skips dW.
  Tensor none;
  EXPECT_TRUE(test::close_as(linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, none), dh1,
                             DType::f64));
}

// Logits of magnitude ~1e4 (exp overflows in f32 and f64): the loss and gradients stay finite
// and the f32 result matches the f64 one.
TEST(LinearCrossEntropy, LargeLogitsStayFinite) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 11, hidden_size = 8, vocab = 50;
  const Tensor h =
      test::random_normal({tokens, hidden_size}, DType::f64, seed, Device::cpu(), 100.0);
  const Tensor w = test::random_normal({vocab, hidden_size}, DType::f64, seed + 1, Device::cpu(),
                                       100.0 / std::sqrt(double(hidden_size)));
  const Tensor y = labels_tensor(random_labels(tokens, vocab, seed + 2, 5));
  const CrossEntropyResult r64 = linear_cross_entropy_forward(h, w, y, Tensor());
  double biggest = 0;
  for (double v : r64.logsumexp.to_double_vector()) biggest = std::max(biggest, std::abs(v));
  EXPECT_GT(biggest, 2000.0) << "the test needs large logits";
  EXPECT_TRUE(std::isfinite(r64.loss.item()));
  const Tensor h32 = h.to(DType::f32), w32 = w.to(DType::f32);
  const CrossEntropyResult r32 = linear_cross_entropy_forward(h32, w32, y, Tensor());
  EXPECT_TRUE(test::close_as(r32.loss, r64.loss.to(DType::f32), DType::f32));
  Tensor dw = Tensor::zeros({vocab, hidden_size}, DType::f32);
  const Tensor dh = linear_cross_entropy_backward(1.0, h32, w32, y, Tensor(), r32, dw);
  for (double v : dh.to_double_vector()) ASSERT_TRUE(std::isfinite(v));
  for (double v : dw.to_double_vector()) ASSERT_TRUE(std::isfinite(v));
  Tensor dw64 = Tensor::zeros({vocab, hidden_size}, DType::f64);
  const Tensor dh64 = linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r64, dw64);
  // Softmax at this scale is nearly one-hot; f32 logits carry ~1e-3 absolute error.
  EXPECT_TRUE(test::close(dh, dh64.to(DType::f32), 1e-3, "dh"));
  EXPECT_TRUE(test::close(dw, dw64.to(DType::f32), 1e-3, "dW"));
}

TEST(LinearCrossEntropy, Bf16ComputesInFp32) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 13, hidden_size = 7, vocab = 29;
  const Tensor h = test::random_normal({tokens, hidden_size}, DType::bf16, seed);
  const Tensor w = test::random_normal({vocab, hidden_size}, DType::bf16, seed + 1);
  const Tensor y = labels_tensor(random_labels(tokens, vocab, seed + 2, 4), DType::i32);
  const Tensor mask = random_mask(tokens, seed + 3);
  const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, mask);
  const CrossEntropyResult ref =
      linear_cross_entropy_forward(h.to(DType::f32), w.to(DType::f32), y, mask);
  EXPECT_EQ(r.loss.dtype(), DType::f32);
  EXPECT_TRUE(test::equal(r.loss, ref.loss));
  EXPECT_TRUE(test::equal(r.token_losses, ref.token_losses));
  Tensor dw = Tensor::zeros({vocab, hidden_size}, DType::f32);
  Tensor dw_ref = Tensor::zeros({vocab, hidden_size}, DType::f32);
  const Tensor dh = linear_cross_entropy_backward(1.0, h, w, y, mask, r, dw);
  const Tensor dh_ref =
      linear_cross_entropy_backward(1.0, h.to(DType::f32), w.to(DType::f32), y, mask, ref, dw_ref);
  EXPECT_EQ(dh.dtype(), DType::bf16);
  EXPECT_TRUE(test::equal(dh, dh_ref.to(DType::bf16)));
  EXPECT_TRUE(test::equal(dw, dw_ref));
}

TEST(LinearCrossEntropy, EmptyTokens) {
  const Tensor h = Tensor::empty({0, 4}, DType::f32);
  const Tensor w = Tensor::zeros({6, 4}, DType::f32);
  const Tensor y = Tensor::empty({0}, DType::i64);
  const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, Tensor());
  EXPECT_EQ(r.loss.item(), 0.0);
  EXPECT_EQ(r.token_losses.shape(), (Shape{0}));
  Tensor dw = Tensor::full({6, 4}, 3.0, DType::f32);
  const Tensor dh = linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, dw);
  EXPECT_EQ(dh.shape(), (Shape{0, 4}));
  EXPECT_TRUE(test::equal(dw, Tensor::full({6, 4}, 3.0, DType::f32)));
}

TEST(LinearCrossEntropy, RejectsBadInput) {
  const Tensor h = Tensor::zeros({4, 3}, DType::f32);
  const Tensor w = Tensor::zeros({5, 3}, DType::f32);
  const Tensor y = labels_tensor({0, 1, kIgnore, 4});
  EXPECT_NO_THROW(linear_cross_entropy_forward(h, w, y, Tensor()));
  EXPECT_THROW(linear_cross_entropy_forward(h, w, labels_tensor({0, 1, 5, 4}), Tensor()),
               moe::Error);  // label == V
  EXPECT_THROW(linear_cross_entropy_forward(h, w, labels_tensor({0, -1, 2, 4}), Tensor()),
               moe::Error);  // negative and not ignore_index
  CrossEntropyOptions minus_one;
  minus_one.ignore_index = -1;
  EXPECT_NO_THROW(
      linear_cross_entropy_forward(h, w, labels_tensor({0, -1, 2, 4}), Tensor(), minus_one));
  EXPECT_THROW(linear_cross_entropy_forward(h, Tensor::zeros({5, 4}, DType::f32), y, Tensor()),
               moe::Error);  // H differs
  EXPECT_THROW(linear_cross_entropy_forward(h, w.to(DType::f64), y, Tensor()), moe::Error);
  EXPECT_THROW(linear_cross_entropy_forward(h.to(DType::i32), w.to(DType::i32), y, Tensor()),
               moe::Error);
  EXPECT_THROW(linear_cross_entropy_forward(h, Tensor::zeros({0, 3}, DType::f32), y, Tensor()),
               moe::Error);  // empty vocabulary
  EXPECT_THROW(linear_cross_entropy_forward(h, w, y.to(DType::f32), Tensor()), moe::Error);
  EXPECT_THROW(linear_cross_entropy_forward(h, w, labels_tensor({0, 1, 2}), Tensor()), moe::Error);
  EXPECT_THROW(linear_cross_entropy_forward(h, w, y, Tensor::zeros({4}, DType::f64)), moe::Error);
  EXPECT_THROW(linear_cross_entropy_forward(h, w, y, Tensor::zeros({3}, DType::f32)), moe::Error);
  CrossEntropyOptions no_chunk;
  no_chunk.chunk_size = 0;
  EXPECT_THROW(linear_cross_entropy_forward(h, w, y, Tensor(), no_chunk), moe::Error);
  EXPECT_THROW(linear_cross_entropy_partials(h, w, y, -1), moe::Error);
  EXPECT_THROW(cross_entropy_combine({}, y, Tensor(), 5), moe::Error);
  const CrossEntropyPartials p = linear_cross_entropy_partials(h, w, y, 0);
  EXPECT_THROW(cross_entropy_combine({p}, labels_tensor({0, 1, 2}), Tensor(), 5), moe::Error);
  EXPECT_THROW(cross_entropy_combine({p}, y, Tensor(), 0), moe::Error);

  const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, Tensor());
  Tensor dw = Tensor::zeros({5, 3}, DType::f32);
  EXPECT_NO_THROW(linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, dw));
  Tensor dw_bad_shape = Tensor::zeros({5, 4}, DType::f32);
  EXPECT_THROW(linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, dw_bad_shape), moe::Error);
  Tensor dw_bf16 = Tensor::zeros({5, 3}, DType::bf16);
  EXPECT_THROW(linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, dw_bf16), moe::Error);
  // bf16 weights take an f32 gradient, not a bf16 one.
  Tensor dw_for_bf16 = Tensor::zeros({5, 3}, DType::bf16);
  const Tensor hb = h.to(DType::bf16), wb = w.to(DType::bf16);
  EXPECT_THROW(
      linear_cross_entropy_backward(1.0, hb, wb, y, Tensor(),
                                    linear_cross_entropy_forward(hb, wb, y, Tensor()), dw_for_bf16),
      moe::Error);
  CrossEntropyResult bad = r;
  bad.logsumexp = Tensor::zeros({3}, DType::f32);
  EXPECT_THROW(linear_cross_entropy_backward(1.0, h, w, y, Tensor(), bad, dw), moe::Error);
  bad = r;
  bad.weight_sum = Tensor();
  EXPECT_THROW(linear_cross_entropy_backward(1.0, h, w, y, Tensor(), bad, dw), moe::Error);
}

}  // namespace
}  // namespace moe::ops
