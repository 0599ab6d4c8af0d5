// Attention dropout on the CPU (ops/attention.h, AttentionOptions::dropout): the forward against
// a dense softmax with the dropout.h masks written out here, fp64 finite-difference gradients
// with a fixed mask (GQA, D != Dv, causal and full, both layouts), p = 0 bitwise equal to no
// dropout, p = 1 zeros, masks that do not depend on how the batch is split, and calls on a block
// of heads (tensor parallelism) or on query / key chunks (context parallelism) that draw the
// masks of the whole problem.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "common/check.h"
#include "moe/ops/attention.h"
#include "ops/dropout_testing.h"

namespace moe::ops {
namespace {

DropoutArgs probs_dropout(double p, uint64_t seed, int64_t first_sample) {
  DropoutArgs a;
  a.p = p;
  a.key = dropout_key(seed, 3, DropoutSite::attention_probs);
  a.first_sample = first_sample;
  return a;
}

// out [B, S, Hq, Dv] (bshd) = sum_j softmax_j(scale q_i k_j) M_ij / (1 - p) v_j, dense, f64,
// with M_ij at n = (((first_sample + b) Hq_total + head_offset + h) S_total + query_offset + i)
// S_total + key_offset + j.
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
          const int64_t heads = drop.heads_total > 0 ? drop.heads_total : Hq;
          const int64_t seq = drop.seq_total > 0 ? drop.seq_total : S;
          const uint64_t idx =
              uint64_t((((drop.first_sample + b) * heads + drop.head_offset + h) * seq +
                        drop.query_offset + i) *
                           seq +
                       drop.key_offset + j);
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
      // Heads 3..6 of 9, queries at 4..10 and keys at 1..7 of a sequence of 13.
      AttentionOptions block = o;
      block.dropout.head_offset = 3;
      block.dropout.heads_total = 9;
      block.dropout.query_offset = 4;
      block.dropout.key_offset = 1;
      block.dropout.seq_total = 13;
      const Tensor out = attention_forward(q, k, v, block).out;
      EXPECT_TRUE(
          test::close(out, reference_forward(q, k, v, causal, block.dropout), 1e-12, "out"));
      if (p < 1.0) {
        EXPECT_FALSE(test::close(out, r.out, 1e-3, "offsets change the mask"));
      }
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

// Tensor parallelism: heads [h0, h0 + n) with their kv heads, given head_offset / heads_total,
// give the all-heads call's out, lse, dq, dk and dv of those heads bit for bit (GQA, both
// layouts, causal and full, uneven blocks). A block at the wrong head offset gets other masks.
TEST(AttentionDropout, HeadBlocksConcatenateToTheAllHeadsCall) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t B = 2, S = 7, Hq = 6, Hkv = 3, group = Hq / Hkv;
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
    for (bool causal : {true, false}) {
      SCOPED_TRACE(testing::Message() << (layout == AttentionLayout::bshd ? "bshd" : "sbhd")
                                      << (causal ? " causal" : " full"));
      const Shape lead = layout == AttentionLayout::bshd ? Shape{B, S} : Shape{S, B};
      const Tensor q = test::random_normal({lead[0], lead[1], Hq, 5}, DType::f64, seed);
      const Tensor k = test::random_normal({lead[0], lead[1], Hkv, 5}, DType::f64, seed + 1);
      const Tensor v = test::random_normal({lead[0], lead[1], Hkv, 3}, DType::f64, seed + 2);
      const Tensor dout = test::random_normal({lead[0], lead[1], Hq, 3}, DType::f64, seed + 3);
      AttentionOptions o;
      o.causal = causal;
      o.layout = layout;
      o.dropout = probs_dropout(0.3, seed + 4, 6);
      const AttentionOutput all = attention_forward(q, k, v, o);
      const AttentionGrads all_g = attention_backward(dout, q, k, v, all.out, all.lse, o);
      // Blocks of 2 and 4 query heads (1 and 2 kv heads).
      std::vector<Tensor> out, lse, dq, dk, dv;
      for (auto [h0, n] : {std::pair<int64_t, int64_t>{0, 2}, {2, 4}}) {
        AttentionOptions ob = o;
        ob.dropout.head_offset = h0;
        ob.dropout.heads_total = Hq;
        const Tensor qb = test::slice_dim(q, 2, h0, n), dob = test::slice_dim(dout, 2, h0, n);
        const Tensor kb = test::slice_dim(k, 2, h0 / group, n / group);
        const Tensor vb = test::slice_dim(v, 2, h0 / group, n / group);
        const AttentionOutput r = attention_forward(qb, kb, vb, ob);
        const AttentionGrads g = attention_backward(dob, qb, kb, vb, r.out, r.lse, ob);
        out.push_back(r.out);
        lse.push_back(r.lse);
        dq.push_back(g.q);
        dk.push_back(g.k);
        dv.push_back(g.v);
        if (h0 > 0) {  // the block as if it were heads 0..n of its own
          AttentionOptions wrong = ob;
          wrong.dropout.head_offset = 0;
          EXPECT_FALSE(test::equal(attention_forward(qb, kb, vb, wrong).out, r.out));
        }
      }
      EXPECT_TRUE(test::equal(test::concat_dim(out, 2), all.out, "out"));
      EXPECT_TRUE(test::equal(test::concat_dim(lse, 1), all.lse, "lse"));
      EXPECT_TRUE(test::equal(test::concat_dim(dq, 2), all_g.q, "dq"));
      EXPECT_TRUE(test::equal(test::concat_dim(dk, 2), all_g.k, "dk"));
      EXPECT_TRUE(test::equal(test::concat_dim(dv, 2), all_g.v, "dv"));
    }
  }
}

// Context parallelism: queries [qo, qo + L) against keys [ko, ko + L) of a sequence of T, given
// query_offset / key_offset / seq_total, equal those rows of the whole-sequence call in which
// the other keys get zero weight. The whole call sees an extra q/k column: q's is 1, and k's is
// 0 for the chunk's keys and -1e6 for the others, so their probabilities underflow to exactly 0
// (every sum the CPU forms meets the same nonzero terms in the same order). dout is zero
// outside the query chunk, so dk and dv of the chunk's keys collect only its rows.
TEST(AttentionDropout, QueryAndKeyChunksDrawTheWholeSequencesMasks) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t B = 2, T = 12, L = 5, Hq = 2, Hkv = 1, D = 4, Dv = 3;
  struct Chunks {
    int64_t qo, ko;
    bool causal;
  };
  uint64_t s = seed;
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
    for (const Chunks& c : {Chunks{5, 5, true}, Chunks{7, 2, false}, Chunks{0, 7, false}}) {
      const bool bshd = layout == AttentionLayout::bshd;
      SCOPED_TRACE(testing::Message() << (bshd ? "bshd" : "sbhd") << " queries at " << c.qo
                                      << ", keys at " << c.ko << (c.causal ? " causal" : ""));
      const int64_t seq_dim = bshd ? 1 : 0;
      auto dims = [&](int64_t seq, int64_t heads, int64_t dim) {
        return bshd ? Shape{B, seq, heads, dim} : Shape{seq, B, heads, dim};
      };
      // Element (b, t, h, D) of the whole-sequence tensors: the extra column.
      auto extra = [&](int64_t b, int64_t t, int64_t h, int64_t heads) {
        return size_t(((bshd ? b * T + t : t * B + b) * heads + h) * (D + 1) + D);
      };
      std::vector<double> q =
          test::random_normal(dims(T, Hq, D + 1), DType::f64, ++s).to_double_vector();
      std::vector<double> k =
          test::random_normal(dims(T, Hkv, D + 1), DType::f64, ++s).to_double_vector();
      std::vector<double> dout =
          test::random_normal(dims(T, Hq, Dv), DType::f64, ++s).to_double_vector();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t h = 0; h < Hq; ++h) {
            q[extra(b, t, h, Hq)] = 1.0;
            if (t < c.qo || t >= c.qo + L)
              for (int64_t d = 0; d < Dv; ++d)
                dout[size_t(((bshd ? b * T + t : t * B + b) * Hq + h) * Dv + d)] = 0.0;
          }
          const bool in_chunk = t >= c.ko && t < c.ko + L;
          for (int64_t h = 0; h < Hkv; ++h) k[extra(b, t, h, Hkv)] = in_chunk ? 0.0 : -1e6;
        }
      const Tensor qw = Tensor::from_vector(q, dims(T, Hq, D + 1));
      const Tensor kw = Tensor::from_vector(k, dims(T, Hkv, D + 1));
      const Tensor vw = test::random_normal(dims(T, Hkv, Dv), DType::f64, ++s);
      const Tensor dw = Tensor::from_vector(dout, dims(T, Hq, Dv));
      AttentionOptions o;
      o.causal = c.causal;
      o.layout = layout;
      o.dropout = probs_dropout(0.3, ++s, 4);
      const AttentionOutput whole = attention_forward(qw, kw, vw, o);
      const AttentionGrads whole_g = attention_backward(dw, qw, kw, vw, whole.out, whole.lse, o);

      AttentionOptions oc = o;
      oc.dropout.query_offset = c.qo;
      oc.dropout.key_offset = c.ko;
      oc.dropout.seq_total = T;
      const Tensor qc = test::slice_dim(qw, seq_dim, c.qo, L);
      const Tensor dc = test::slice_dim(dw, seq_dim, c.qo, L);
      const Tensor kc = test::slice_dim(kw, seq_dim, c.ko, L);
      const Tensor vc = test::slice_dim(vw, seq_dim, c.ko, L);
      const AttentionOutput chunk = attention_forward(qc, kc, vc, oc);
      const AttentionGrads chunk_g = attention_backward(dc, qc, kc, vc, chunk.out, chunk.lse, oc);
      EXPECT_TRUE(test::equal(chunk.out, test::slice_dim(whole.out, seq_dim, c.qo, L), "out"));
      EXPECT_TRUE(test::equal(chunk.lse, test::slice_dim(whole.lse, 2, c.qo, L), "lse"));
      EXPECT_TRUE(test::equal(chunk_g.q, test::slice_dim(whole_g.q, seq_dim, c.qo, L), "dq"));
      EXPECT_TRUE(test::equal(chunk_g.k, test::slice_dim(whole_g.k, seq_dim, c.ko, L), "dk"));
      EXPECT_TRUE(test::equal(chunk_g.v, test::slice_dim(whole_g.v, seq_dim, c.ko, L), "dv"));
      // The chunk with either offset wrong (here: swapped) gets other masks.
      AttentionOptions wrong = oc;
      wrong.dropout.query_offset = c.ko;
      wrong.dropout.key_offset = c.qo;
      if (c.qo != c.ko) {
        EXPECT_FALSE(test::equal(attention_forward(qc, kc, vc, wrong).out, chunk.out));
      }
      wrong = oc;
      wrong.dropout.seq_total = T + 1;
      EXPECT_FALSE(test::equal(attention_forward(qc, kc, vc, wrong).out, chunk.out));
    }
  }
}

TEST(AttentionDropout, BadBlocksAreRefusedNamingTheField) {
  const Tensor q = test::random_normal({1, 3, 2, 4}, DType::f32, 1);
  auto expect_refused = [&](const DropoutArgs& d, const std::vector<std::string>& fields) {
    AttentionOptions o;
    o.dropout = d;
    const std::string m = test::message_of([&] { (void)attention_forward(q, q, q, o); });
    EXPECT_NE(m, "");
    for (const std::string& f : fields) EXPECT_NE(m.find(f), std::string::npos) << m;
    const AttentionOutput r = attention_forward(q, q, q);
    EXPECT_NE(test::message_of([&] { (void)attention_backward(q, q, q, q, r.out, r.lse, o); }), "");
  };
  DropoutArgs d = probs_dropout(0.5, 1, 0);
  d.head_offset = -1;
  expect_refused(d, {"head_offset"});
  d.head_offset = 3;  // heads 3..5 of 4
  d.heads_total = 4;
  expect_refused(d, {"head_offset 3", "heads_total 4"});
  d = probs_dropout(0.5, 1, 0);
  d.heads_total = -2;
  expect_refused(d, {"heads_total"});
  d = probs_dropout(0.5, 1, 0);
  d.query_offset = 2;  // queries 2..5 of 3 (seq_total 0: the local S)
  expect_refused(d, {"query_offset 2"});
  d.seq_total = 4;
  expect_refused(d, {"query_offset 2", "seq_total 4"});
  d = probs_dropout(0.5, 1, 0);
  d.key_offset = -1;
  d.seq_total = 10;
  expect_refused(d, {"key_offset"});
  d.key_offset = 8;
  expect_refused(d, {"key_offset 8", "seq_total 10"});
  d = probs_dropout(0.5, 1, 0);
  d.seq_offset = 1;  // a token tensor's field
  d.seq_total = 10;
  expect_refused(d, {"seq_offset"});
  // The last blocks exactly fit.
  d = probs_dropout(0.5, 1, 0);
  d.head_offset = 2;
  d.heads_total = 4;
  d.query_offset = 7;
  d.key_offset = 0;
  d.seq_total = 10;
  AttentionOptions o;
  o.dropout = d;
  EXPECT_NO_THROW(attention_forward(q, q, q, o));
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
