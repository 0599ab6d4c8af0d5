// Attention dropout on the CPU (ops/attention.h, AttentionOptions::dropout): the forward against
// a dense softmax with the dropout.h masks written out here, fp64 finite-difference gradients
// with a fixed mask (GQA, D != Dv, causal and full, both layouts), p = 0 bitwise equal to no
// dropout, p = 1 zeros, and masks that do not depend on how the batch is split.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "common/check.h"
#include "moe/ops/attention.h"

namespace moe::ops {
namespace {

DropoutArgs probs_dropout(double p, uint64_t seed, int64_t first_sample) {
  DropoutArgs a;
  a.p = p;
  a.key = dropout_key(seed, 3, DropoutSite::attention_probs);
  a.first_sample = first_sample;
  return a;
}

// out [B, S, Hq, Dv] (bshd) = sum_j softmax_j(scale q_i k_j) M_ij / (1 - p) v_j, dense, f64.
Tensor reference_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                         const DropoutArgs& drop) {
  const int64_t B = q.size(0), S = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(2), Dv = v.size(3), group = Hq / Hkv;
  const std::vector<double> qv = q.to_double_vector(), kv = k.to_double_vector(),
                            vv = v.to_double_vector();
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> out(size_t(B * S * Hq * Dv), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < S; ++i) {
        const int64_t g = h / group, n = causal ? i + 1 : S;
        std::vector<double> s(static_cast<size_t>(n));
        double m = -std::numeric_limits<double>::infinity(), l = 0;
        for (int64_t j = 0; j < n; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += qv[size_t(((b * S + i) * Hq + h) * D + d)] *
                   kv[size_t(((b * S + j) * Hkv + g) * D + d)];
          s[size_t(j)] = scale * dot;
          m = std::max(m, s[size_t(j)]);
        }
        for (int64_t j = 0; j < n; ++j) l += std::exp(s[size_t(j)] - m);
        for (int64_t j = 0; j < n; ++j) {
          const uint64_t idx = uint64_t((((drop.first_sample + b) * Hq + h) * S + i) * S + j);
          const bool keep = !drop.active() || dropout_keep(drop.key, idx, float(drop.p));
          const double c = keep ? (drop.p >= 1 ? 0.0 : 1.0 / (1.0 - drop.p)) : 0.0;
          const double pij = std::exp(s[size_t(j)] - m) / l * c;
          for (int64_t d = 0; d < Dv; ++d)
            out[size_t(((b * S + i) * Hq + h) * Dv + d)] +=
                pij * vv[size_t(((b * S + j) * Hkv + g) * Dv + d)];
        }
      }
  return Tensor::from_vector(out, {B, S, Hq, Dv});
}

TEST(AttentionDropout, ForwardMatchesDenseReference) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (bool causal : {true, false}) {
    for (double p : {0.2, 0.6, 1.0}) {
      SCOPED_TRACE(testing::Message() << (causal ? "causal" : "full") << " p=" << p);
      const Tensor q = test::random_normal({2, 7, 4, 5}, DType::f64, seed);
      const Tensor k = test::random_normal({2, 7, 2, 5}, DType::f64, seed + 1);
      const Tensor v = test::random_normal({2, 7, 2, 3}, DType::f64, seed + 2);
      AttentionOptions o;
      o.causal = causal;
      o.dropout = probs_dropout(p, seed + 3, 9);
      const AttentionOutput r = attention_forward(q, k, v, o);
      EXPECT_TRUE(test::close(r.out, reference_forward(q, k, v, causal, o.dropout), 1e-12, "out"));
      // lse is the undropped softmax's.
      AttentionOptions none = o;
      none.dropout = {};
      EXPECT_TRUE(test::equal(r.lse, attention_forward(q, k, v, none).lse));
    }
  }
}

TEST(AttentionDropout, ZeroProbabilityIsBitwiseNoDropout) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dt : {DType::f32, DType::bf16}) {
    const Tensor q = test::random_normal({2, 9, 4, 8}, dt, seed);
    const Tensor k = test::random_normal({2, 9, 2, 8}, dt, seed + 1);
    const Tensor v = test::random_normal({2, 9, 2, 8}, dt, seed + 2);
    const Tensor dout = test::random_normal({2, 9, 4, 8}, dt, seed + 3);
    AttentionOptions plain, zero;
    zero.dropout = probs_dropout(0.0, seed, 5);
    zero.dropout.key = 12345;  // a key without a probability changes nothing
    const AttentionOutput a = attention_forward(q, k, v, plain),
                          b = attention_forward(q, k, v, zero);
    EXPECT_TRUE(test::equal(a.out, b.out));
    EXPECT_TRUE(test::equal(a.lse, b.lse));
    const AttentionGrads ga = attention_backward(dout, q, k, v, a.out, a.lse, plain);
    const AttentionGrads gb = attention_backward(dout, q, k, v, b.out, b.lse, zero);
    EXPECT_TRUE(test::equal(ga.q, gb.q));
    EXPECT_TRUE(test::equal(ga.k, gb.k));
    EXPECT_TRUE(test::equal(ga.v, gb.v));
  }
}

// L = <out, w> with the mask fixed by (key, first_sample): dq, dk, dv against central
// differences.
TEST(AttentionDropout, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
    for (bool causal : {true, false}) {
      SCOPED_TRACE(testing::Message() << (layout == AttentionLayout::bshd ? "bshd" : "sbhd")
                                      << (causal ? " causal" : " full"));
      // [B, S] = [2, 5] in bshd, [S, B] = [5, 2] in sbhd.
      const Shape lead = layout == AttentionLayout::bshd ? Shape{2, 5} : Shape{5, 2};
      Tensor q = test::random_normal({lead[0], lead[1], 4, 3}, DType::f64, seed);
      Tensor k = test::random_normal({lead[0], lead[1], 2, 3}, DType::f64, seed + 1);
      Tensor v = test::random_normal({lead[0], lead[1], 2, 2}, DType::f64, seed + 2);
      const Tensor w = test::random_normal({lead[0], lead[1], 4, 2}, DType::f64, seed + 3);
      AttentionOptions o;
      o.causal = causal;
      o.layout = layout;
      o.dropout = probs_dropout(0.35, seed + 4, 2);
      const AttentionOutput r = attention_forward(q, k, v, o);
      const AttentionGrads g = attention_backward(w, q, k, v, r.out, r.lse, o);
      auto loss = [&] { return test::dot(attention_forward(q, k, v, o).out, w); };
      EXPECT_TRUE(test::close(g.q, test::numerical_gradient(loss, q), test::kGradCheckTol, "dq"));
      EXPECT_TRUE(test::close(g.k, test::numerical_gradient(loss, k), test::kGradCheckTol, "dk"));
      EXPECT_TRUE(test::close(g.v, test::numerical_gradient(loss, v), test::kGradCheckTol, "dv"));
    }
  }
}

// Sample b of a batch whose first sample is F gets the mask of a one-sample call whose first
// sample is F + b.
TEST(AttentionDropout, MaskDoesNotDependOnTheBatchSplit) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor q = test::random_normal({3, 6, 2, 4}, DType::f64, seed);
  const Tensor k = test::random_normal({3, 6, 1, 4}, DType::f64, seed + 1);
  const Tensor v = test::random_normal({3, 6, 1, 4}, DType::f64, seed + 2);
  AttentionOptions o;
  o.dropout = probs_dropout(0.5, seed + 3, 40);
  const Tensor whole = attention_forward(q, k, v, o).out;
  for (int64_t b = 0; b < 3; ++b) {
    AttentionOptions one = o;
    one.dropout.first_sample = 40 + b;
    const Tensor part = attention_forward(q.rows(b, 1), k.rows(b, 1), v.rows(b, 1), one).out;
    EXPECT_TRUE(test::equal(part, whole.rows(b, 1).clone())) << b;
  }
  AttentionOptions other = o;
  other.dropout.first_sample = 41;
  EXPECT_FALSE(test::equal(attention_forward(q, k, v, other).out, whole));
}

TEST(AttentionDropout, BadProbabilityIsRefused) {
  const Tensor q = test::random_normal({1, 3, 1, 4}, DType::f32, 1);
  AttentionOptions o;
  o.dropout.p = 1.5;
  EXPECT_THROW(attention_forward(q, q, q, o), Error);
  o.dropout.p = 0.5;
  o.dropout.first_sample = -2;
  EXPECT_THROW(attention_forward(q, q, q, o), Error);
  // CPU tensors always answer native (the CUDA test checks the cuDNN fallback).
  o.dropout.first_sample = 0;
  std::string reason;
  EXPECT_EQ(attention_backend_for(q, q, q, o, &reason), AttentionBackend::native);
}

}  // namespace
}  // namespace moe::ops
