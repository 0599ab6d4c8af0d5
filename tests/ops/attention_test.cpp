// Attention on the CPU: the forward against a dense softmax(scale q k^T + mask) v written out
// here, fp64 finite-difference gradients of dq, dk, dv (GQA, causal and full, a YaRN-like
// scale, both layouts), the causal known answers (token 0 copies v_0; S = 1), GQA equal to MHA
// with repeated k/v, bf16 computed in f32, large scores, empty inputs, errors and the backend
// option.
#include "moe/ops/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/check.h"
#include "ops/attention_test_util.h"

namespace moe::ops {
namespace {

using test::swap_leading;

// k [B, S, Hkv, D] -> [B, S, Hkv * group, D], head h reading kv head h / group.
Tensor repeat_heads(const Tensor& t, int64_t group) {
  const Shape& s = t.shape();
  const std::vector<double> x = t.to_double_vector();
  std::vector<double> y;
  y.reserve(x.size() * static_cast<size_t>(group));
  for (int64_t bs = 0; bs < s[0] * s[1]; ++bs)
    for (int64_t h = 0; h < s[2] * group; ++h)
      for (int64_t d = 0; d < s[3]; ++d) y.push_back(x[(bs * s[2] + h / group) * s[3] + d]);
  return Tensor::from_vector(y, {s[0], s[1], s[2] * group, s[3]}).to(t.dtype());
}

// The inverse of repeat_heads for gradients: sums each group of heads.
Tensor sum_head_groups(const Tensor& t, int64_t group) {
  const Shape& s = t.shape();
  const std::vector<double> x = t.to_double_vector();
  const int64_t kv_heads = s[2] / group;
  std::vector<double> y(static_cast<size_t>(s[0] * s[1] * kv_heads * s[3]), 0.0);
  for (int64_t bs = 0; bs < s[0] * s[1]; ++bs)
    for (int64_t h = 0; h < s[2]; ++h)
      for (int64_t d = 0; d < s[3]; ++d)
        y[(bs * kv_heads + h / group) * s[3] + d] += x[(bs * s[2] + h) * s[3] + d];
  return Tensor::from_vector(y, {s[0], s[1], kv_heads, s[3]}).to(t.dtype());
}

// Dense reference from the definition: out = softmax(scale q k^T + mask) v per (b, h), the
// whole S x S matrix at once, and lse = log sum_j exp(scale q_i k_j) over visible j.
AttentionOutput dense_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                                bool causal) {
  const int64_t B = q.size(0), S = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(2), Dv = v.size(3), group = Hq / Hkv;
  const std::vector<double> qv = q.to_double_vector(), kv = k.to_double_vector(),
                            vv = v.to_double_vector();
  std::vector<double> out(static_cast<size_t>(B * S * Hq * Dv)),
      lse(static_cast<size_t>(B * Hq * S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / group;
      std::vector<double> logits(static_cast<size_t>(S * S),
                                 -std::numeric_limits<double>::infinity());
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < S; ++j) {
          if (causal && j > i) continue;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += qv[((b * S + i) * Hq + h) * D + d] * kv[((b * S + j) * Hkv + g) * D + d];
          logits[i * S + j] = scale * dot;
        }
      for (int64_t i = 0; i < S; ++i) {
        const double m = *std::max_element(logits.begin() + i * S, logits.begin() + (i + 1) * S);
        double z = 0;
        for (int64_t j = 0; j < S; ++j) z += std::exp(logits[i * S + j] - m);
        lse[(b * Hq + h) * S + i] = m + std::log(z);
        for (int64_t d = 0; d < Dv; ++d) {
          double o = 0;
          for (int64_t j = 0; j < S; ++j)
            o += std::exp(logits[i * S + j] - m) / z * vv[((b * S + j) * Hkv + g) * Dv + d];
          out[((b * S + i) * Hq + h) * Dv + d] = o;
        }
      }
    }
  return {Tensor::from_vector(out, {B, S, Hq, Dv}), Tensor::from_vector(lse, {B, Hq, S})};
}

struct Problem {
  Tensor q, k, v;
};

Problem random_problem(int64_t B, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t Dv,
                       DType dtype, uint64_t seed) {
  return {test::random_normal({B, S, Hq, D}, DType::f64, seed).to(dtype),
          test::random_normal({B, S, Hkv, D}, DType::f64, seed + 1).to(dtype),
          test::random_normal({B, S, Hkv, Dv}, DType::f64, seed + 2).to(dtype)};
}

TEST(Attention, ForwardMatchesDenseSoftmax) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Problem p = random_problem(2, 9, 6, 2, 7, 4, DType::f64, seed);
  for (bool causal : {true, false}) {
    for (double scale : {1.0 / std::sqrt(7.0), 0.83}) {
      SCOPED_TRACE(testing::Message() << (causal ? "causal" : "full") << " scale " << scale);
      AttentionOptions options;
      options.causal = causal;
      options.softmax_scale = scale;
      const AttentionOutput got = attention_forward(p.q, p.k, p.v, options);
      const AttentionOutput want = dense_attention(p.q, p.k, p.v, scale, causal);
      EXPECT_EQ(got.out.dtype(), DType::f64);
      EXPECT_EQ(got.lse.dtype(), DType::f64);
      EXPECT_TRUE(test::close_as(got.out, want.out, DType::f64, "out"));
      EXPECT_TRUE(test::close_as(got.lse, want.lse, DType::f64, "lse"));
    }
  }
}

TEST(Attention, DefaultScaleIsInverseSqrtHeadDim) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Problem p = random_problem(1, 5, 2, 1, 6, 3, DType::f64, seed);
  AttentionOptions explicit_scale;
  explicit_scale.softmax_scale = 1.0 / std::sqrt(6.0);
  EXPECT_TRUE(test::equal(attention_forward(p.q, p.k, p.v).out,
                          attention_forward(p.q, p.k, p.v, explicit_scale).out));
  EXPECT_DOUBLE_EQ(attention_scale({}, 6), 1.0 / std::sqrt(6.0));
  EXPECT_DOUBLE_EQ(attention_scale(explicit_scale, 192), 1.0 / std::sqrt(6.0));
}

// dq, dk, dv against central finite differences of L = <out, w> in fp64, for the sizes of the
// brief (B = 2, S = 7, Hq = 4, Hkv = 2, D = 5, Dv = 3).
TEST(Attention, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
    for (bool causal : {true, false}) {
      SCOPED_TRACE(testing::Message() << (layout == AttentionLayout::bshd ? "bshd" : "sbhd")
                                      << (causal ? " causal" : " full"));
      Problem p = random_problem(2, 7, 4, 2, 5, 3, DType::f64, seed);
      if (layout == AttentionLayout::sbhd) {
        p = {swap_leading(p.q), swap_leading(p.k), swap_leading(p.v)};
      }
      AttentionOptions options;
      options.causal = causal;
      options.layout = layout;
      options.softmax_scale = 0.61;  // YaRN-like: not 1/sqrt(D)
      const AttentionOutput fwd = attention_forward(p.q, p.k, p.v, options);
      const Tensor w = test::random_normal(fwd.out.shape(), DType::f64, seed + 3);
      auto loss = [&] { return test::dot(attention_forward(p.q, p.k, p.v, options).out, w); };
      const AttentionGrads g = attention_backward(w, p.q, p.k, p.v, fwd.out, fwd.lse, options);
      EXPECT_TRUE(test::close(g.q, test::numerical_gradient(loss, p.q), test::kGradCheckTol, "dq"));
      EXPECT_TRUE(test::close(g.k, test::numerical_gradient(loss, p.k), test::kGradCheckTol, "dk"));
      EXPECT_TRUE(test::close(g.v, test::numerical_gradient(loss, p.v), test::kGradCheckTol, "dv"));
    }
  }
}

TEST(Attention, SbhdLayoutIsTheTransposeOfBshd) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Problem p = random_problem(3, 6, 4, 1, 5, 7, DType::f64, seed);
  const Tensor dout = test::random_normal({3, 6, 4, 7}, DType::f64, seed + 3);
  const AttentionOutput a = attention_forward(p.q, p.k, p.v);
  const AttentionGrads ga = attention_backward(dout, p.q, p.k, p.v, a.out, a.lse);
  AttentionOptions sbhd;
  sbhd.layout = AttentionLayout::sbhd;
  const Tensor q = swap_leading(p.q), k = swap_leading(p.k), v = swap_leading(p.v);
  const AttentionOutput b = attention_forward(q, k, v, sbhd);
  EXPECT_EQ(b.out.shape(), (Shape{6, 3, 4, 7}));
  EXPECT_EQ(b.lse.shape(), (Shape{3, 4, 6}));
  EXPECT_TRUE(test::close_as(swap_leading(b.out), a.out, DType::f64, "out"));
  EXPECT_TRUE(test::close_as(b.lse, a.lse, DType::f64, "lse"));
  const AttentionGrads gb = attention_backward(swap_leading(dout), q, k, v, b.out, b.lse, sbhd);
  EXPECT_TRUE(test::close_as(swap_leading(gb.q), ga.q, DType::f64, "dq"));
  EXPECT_TRUE(test::close_as(swap_leading(gb.k), ga.k, DType::f64, "dk"));
  EXPECT_TRUE(test::close_as(swap_leading(gb.v), ga.v, DType::f64, "dv"));
}

// Causal: token 0 sees only itself, so out_0 = v_0 exactly and lse_0 = scale <q_0, k_0>.
TEST(Attention, CausalFirstTokenCopiesV0) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t B = 2, S = 5, Hq = 4, Hkv = 2, D = 3, Dv = 6;
  const Problem p = random_problem(B, S, Hq, Hkv, D, Dv, DType::f64, seed);
  const AttentionOutput r = attention_forward(p.q, p.k, p.v);
  const std::vector<double> out = r.out.to_double_vector(), v = p.v.to_double_vector(),
                            q = p.q.to_double_vector(), k = p.k.to_double_vector(),
                            lse = r.lse.to_double_vector();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / (Hq / Hkv);
      for (int64_t d = 0; d < Dv; ++d)
        EXPECT_EQ(out[((b * S) * Hq + h) * Dv + d], v[((b * S) * Hkv + g) * Dv + d]);
      double dot = 0;
      for (int64_t d = 0; d < D; ++d)
        dot += q[((b * S) * Hq + h) * D + d] * k[((b * S) * Hkv + g) * D + d];
      EXPECT_NEAR(lse[(b * Hq + h) * S], dot / std::sqrt(double(D)), 1e-14);
    }
}

// S = 1: out = v, and since P = 1, dS = dP - Delta = <dout, v> - <dout, out> = 0: dq = dk = 0,
// dv = the sum of dout over the kv head's query heads.
TEST(Attention, SingleTokenKnownAnswer) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Problem p = random_problem(3, 1, 4, 2, 5, 3, DType::f64, seed);
  const Tensor dout = test::random_normal({3, 1, 4, 3}, DType::f64, seed + 3);
  const AttentionOutput r = attention_forward(p.q, p.k, p.v);
  EXPECT_TRUE(test::close_as(r.out, repeat_heads(p.v, 2), DType::f64, "out"));
  const AttentionGrads g = attention_backward(dout, p.q, p.k, p.v, r.out, r.lse);
  EXPECT_TRUE(test::equal(g.q, Tensor::zeros(p.q.shape(), DType::f64)));
  EXPECT_TRUE(test::equal(g.k, Tensor::zeros(p.k.shape(), DType::f64)));
  EXPECT_TRUE(test::close_as(g.v, sum_head_groups(dout, 2), DType::f64, "dv"));
}

// GQA (and MQA) equal MHA on k, v repeated per query head; dk, dv are the group sums.
TEST(Attention, GqaEqualsMhaWithRepeatedKv) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t kv_heads : {2, 1}) {
    SCOPED_TRACE(testing::Message() << "Hkv = " << kv_heads);
    const int64_t Hq = 6, group = Hq / kv_heads;
    const Problem p = random_problem(2, 8, Hq, kv_heads, 5, 4, DType::f64, seed);
    const Tensor dout = test::random_normal({2, 8, Hq, 4}, DType::f64, seed + 3);
    const Tensor k_rep = repeat_heads(p.k, group), v_rep = repeat_heads(p.v, group);
    const AttentionOutput gqa = attention_forward(p.q, p.k, p.v);
    const AttentionOutput mha = attention_forward(p.q, k_rep, v_rep);
    EXPECT_TRUE(test::close_as(gqa.out, mha.out, DType::f64, "out"));
    EXPECT_TRUE(test::close_as(gqa.lse, mha.lse, DType::f64, "lse"));
    const AttentionGrads g = attention_backward(dout, p.q, p.k, p.v, gqa.out, gqa.lse);
    const AttentionGrads m = attention_backward(dout, p.q, k_rep, v_rep, mha.out, mha.lse);
    EXPECT_TRUE(test::close_as(g.q, m.q, DType::f64, "dq"));
    EXPECT_TRUE(test::close_as(g.k, sum_head_groups(m.k, group), DType::f64, "dk"));
    EXPECT_TRUE(test::close_as(g.v, sum_head_groups(m.v, group), DType::f64, "dv"));
  }
}

// bf16 and f16 run the f32 code on the widened values and round once: bitwise equal to the f32
// result rounded.
TEST(Attention, HalfPrecisionComputesInF32) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dt : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Problem p = random_problem(2, 11, 4, 2, 9, 5, dt, seed);
    const Tensor dout = test::random_normal({2, 11, 4, 5}, DType::f64, seed + 3).to(dt);
    const auto f32 = [](const Tensor& t) { return t.to(DType::f32); };
    const AttentionOutput r = attention_forward(p.q, p.k, p.v);
    const AttentionOutput ref = attention_forward(f32(p.q), f32(p.k), f32(p.v));
    EXPECT_EQ(r.out.dtype(), dt);
    EXPECT_EQ(r.lse.dtype(), DType::f32);
    EXPECT_TRUE(test::equal(r.out, ref.out.to(dt)));
    EXPECT_TRUE(test::equal(r.lse, ref.lse));
    const AttentionGrads g = attention_backward(dout, p.q, p.k, p.v, r.out, r.lse);
    const AttentionGrads gr =
        attention_backward(f32(dout), f32(p.q), f32(p.k), f32(p.v), f32(r.out), r.lse);
    EXPECT_TRUE(test::equal(g.q, gr.q.to(dt)));
    EXPECT_TRUE(test::equal(g.k, gr.k.to(dt)));
    EXPECT_TRUE(test::equal(g.v, gr.v.to(dt)));
  }
}

// Scores of order 1e5 would overflow a naive exp in f32 (and f64); the max-shifted softmax stays
// finite, each output stays inside the range of v, and lse tracks the largest score.
TEST(Attention, LargeScoresStayFinite) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Problem p = random_problem(2, 13, 2, 1, 8, 4, DType::f32, seed);
  p.q = test::random_normal({2, 13, 2, 8}, DType::f32, seed, Device::cpu(), 3e4);
  const AttentionOutput r = attention_forward(p.q, p.k, p.v);
  const std::vector<double> v = p.v.to_double_vector();
  const double v_min = *std::min_element(v.begin(), v.end());
  const double v_max = *std::max_element(v.begin(), v.end());
  for (double o : r.out.to_double_vector()) {
    EXPECT_TRUE(std::isfinite(o));
    EXPECT_GE(o, v_min - 1e-4);
    EXPECT_LE(o, v_max + 1e-4);
  }
  const AttentionOutput ref = dense_attention(p.q.to(DType::f64), p.k.to(DType::f64),
                                              p.v.to(DType::f64), 1.0 / std::sqrt(8.0), true);
  double max_abs_lse = 0;
  for (double l : ref.lse.to_double_vector()) max_abs_lse = std::max(max_abs_lse, std::abs(l));
  EXPECT_GT(max_abs_lse, 1e4) << "the test must reach large scores";
  EXPECT_TRUE(test::close(r.lse, ref.lse.to(DType::f32), 1e-5, "lse"));
  const Tensor dout = test::random_normal(r.out.shape(), DType::f32, seed + 3);
  const AttentionGrads g = attention_backward(dout, p.q, p.k, p.v, r.out, r.lse);
  for (const Tensor* t : {&g.q, &g.k, &g.v})
    for (double x : t->to_double_vector()) EXPECT_TRUE(std::isfinite(x));
}

TEST(Attention, EmptyInputs) {
  for (const Shape& qs : {Shape{0, 5, 4, 8}, Shape{2, 0, 4, 8}}) {
    const Tensor q = Tensor::empty(qs, DType::f32);
    const Tensor k = Tensor::empty({qs[0], qs[1], 2, 8}, DType::f32);
    const Tensor v = Tensor::empty({qs[0], qs[1], 2, 3}, DType::f32);
    const AttentionOutput r = attention_forward(q, k, v);
    EXPECT_EQ(r.out.shape(), (Shape{qs[0], qs[1], 4, 3}));
    EXPECT_EQ(r.lse.shape(), (Shape{qs[0], 4, qs[1]}));
    const AttentionGrads g = attention_backward(r.out, q, k, v, r.out, r.lse);
    EXPECT_EQ(g.q.shape(), q.shape());
    EXPECT_EQ(g.k.shape(), k.shape());
    EXPECT_EQ(g.v.shape(), v.shape());
  }
}

// The backend option names round-trip; the CPU ignores the option (its reference always runs)
// and reports native.
TEST(Attention, BackendOption) {
  for (AttentionBackend b :
       {AttentionBackend::automatic, AttentionBackend::cudnn, AttentionBackend::native})
    EXPECT_EQ(parse_attention_backend(attention_backend_name(b)), b);
  EXPECT_THROW(parse_attention_backend("flash"), moe::Error);
  const Tensor q = test::random_normal({1, 6, 2, 8}, DType::f32, 1);
  const Tensor k = test::random_normal({1, 6, 1, 8}, DType::f32, 2);
  const Tensor v = test::random_normal({1, 6, 1, 8}, DType::f32, 3);
  AttentionOptions cudnn;
  cudnn.backend = AttentionBackend::cudnn;
  EXPECT_EQ(attention_backend_for(q, k, v, cudnn), AttentionBackend::native);
  EXPECT_TRUE(test::equal(attention_forward(q, k, v, cudnn).out, attention_forward(q, k, v).out));
}

TEST(Attention, RejectsBadInput) {
  const auto t = [](Shape s, DType dt = DType::f32) { return Tensor::zeros(s, dt); };
  const Tensor q = t({2, 5, 4, 8}), k = t({2, 5, 2, 8}), v = t({2, 5, 2, 3});
  EXPECT_NO_THROW(attention_forward(q, k, v));
  EXPECT_THROW(attention_forward(q, t({2, 5, 3, 8}), t({2, 5, 3, 3})), moe::Error);  // 4 % 3
  EXPECT_THROW(attention_forward(q, t({2, 5, 2, 7}), v), moe::Error);                // D of k
  EXPECT_THROW(attention_forward(q, t({2, 6, 2, 8}), v), moe::Error);                // Sk: k 6, v 5
  EXPECT_THROW(attention_forward(q, k, t({2, 5, 1, 3})), moe::Error);                // Hkv of v
  EXPECT_THROW(attention_forward(q, k, t({1, 5, 2, 3})), moe::Error);                // B of v
  EXPECT_THROW(attention_forward(t({2, 5, 32}), k, v), moe::Error);                  // rank
  EXPECT_THROW(attention_forward(q, k.to(DType::bf16), v), moe::Error);  // dtype mismatch
  EXPECT_THROW(attention_forward(t({2, 5, 4, 8}, DType::i32), t({2, 5, 2, 8}, DType::i32),
                                 t({2, 5, 2, 3}, DType::i32)),
               moe::Error);
  EXPECT_THROW(attention_forward(q, Tensor(), v), moe::Error);
  AttentionOptions nan_scale;
  nan_scale.softmax_scale = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(attention_forward(q, k, v, nan_scale), moe::Error);
  AttentionOptions sbhd;
  sbhd.layout = AttentionLayout::sbhd;  // q is [S=2, B=5, ..]: k must be [2, 5, 2, 8] too
  EXPECT_NO_THROW(attention_forward(q, k, v, sbhd));
  EXPECT_THROW(attention_forward(q, t({5, 2, 2, 8}), v, sbhd), moe::Error);

  const AttentionOutput r = attention_forward(q, k, v);
  EXPECT_NO_THROW(attention_backward(r.out, q, k, v, r.out, r.lse));
  EXPECT_THROW(attention_backward(t({2, 5, 4, 8}), q, k, v, r.out, r.lse), moe::Error);  // dout
  EXPECT_THROW(attention_backward(r.out, q, k, v, t({2, 5, 4, 4}), r.lse), moe::Error);  // out
  EXPECT_THROW(attention_backward(r.out, q, k, v, r.out, t({2, 5, 4})), moe::Error);     // lse
  EXPECT_THROW(attention_backward(r.out, q, k, v, r.out, r.lse.to(DType::f64)), moe::Error);
  EXPECT_THROW(attention_backward(r.out.to(DType::bf16), q, k, v, r.out, r.lse), moe::Error);
  EXPECT_THROW(attention_backward(r.out, q, k, v, r.out, Tensor()), moe::Error);
}

}  // namespace
}  // namespace moe::ops
