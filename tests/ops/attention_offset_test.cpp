// Attention of a query chunk over a key sequence of another length with an offset causal mask
// (AttentionOptions::causal_offset: query row i sees keys j <= min(i + offset, Sk - 1); context
// parallelism) on the CPU: the chunk at offset o over keys [0, Sk) equals rows [o, o + Sq) of the
// whole causal call with Sq_total = Sk, bit for bit in f64 (out, lse, dq; dk and dv equal the
// whole call's when its other rows get zero dout), for GQA with D != Dv and odd sizes, causal
// and full, both layouts; the forward against a dense reference that writes the mask out
// (clipped rows, Sq > Sk, an offset past the keys); fp64 finite-difference gradients;
// attention dropout drawing the whole sequence's masks from a chunk; and the errors (Sk = 0,
// a negative offset, k and v of different lengths, dropout blocks checked with Sq for queries
// and Sk for keys).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/ops/attention.h"
#include "ops/attention_test_util.h"
#include "ops/dropout_testing.h"

namespace moe::ops {
namespace {

using test::in_layout;

// One problem: Sq query rows at key position `offset` over Sk keys.
struct Chunk {
  int64_t sq, sk, offset;
  bool causal = true;
};

std::ostream& operator<<(std::ostream& out, const Chunk& c) {
  return out << "Sq=" << c.sq << " Sk=" << c.sk << (c.causal ? " causal offset " : " full, at ")
             << c.offset;
}

constexpr int64_t kB = 2, kHq = 4, kHkv = 2, kD = 5, kDv = 3;  // GQA, D != Dv

// Zeros of `rows` positions of dout in `layout`.
Tensor zero_rows(int64_t rows, AttentionLayout layout) {
  return in_layout(Tensor::zeros({kB, rows, kHq, kDv}, DType::f64), layout);
}

const char* layout_name(AttentionLayout layout) {
  return layout == AttentionLayout::bshd ? "bshd" : "sbhd";
}

AttentionOptions options_for(const Chunk& c, AttentionLayout layout) {
  AttentionOptions o;
  o.causal = c.causal;
  o.causal_offset = c.causal ? c.offset : 0;
  o.layout = layout;
  return o;
}

// Dense reference (bshd, f64): logits over the whole Sq x Sk matrix with the mask written out,
// j <= min(i + offset, Sk - 1) when causal.
AttentionOutput dense_reference(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                                bool causal, int64_t offset) {
  const int64_t B = q.size(0), Sq = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Sk = k.size(1), Hkv = k.size(2), Dv = v.size(3), group = Hq / Hkv;
  const std::vector<double> qv = q.to_double_vector(), kv = k.to_double_vector(),
                            vv = v.to_double_vector();
  std::vector<double> out(size_t(B * Sq * Hq * Dv)), lse(size_t(B * Hq * Sq));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Sq; ++i) {
        const int64_t g = h / group, last = causal ? std::min(i + offset, Sk - 1) : Sk - 1;
        std::vector<double> logits(size_t(Sk), -std::numeric_limits<double>::infinity());
        for (int64_t j = 0; j <= last; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += qv[size_t(((b * Sq + i) * Hq + h) * D + d)] *
                   kv[size_t(((b * Sk + j) * Hkv + g) * D + d)];
          logits[size_t(j)] = scale * dot;
        }
        const double m = *std::max_element(logits.begin(), logits.end());
        double z = 0;
        for (double x : logits) z += std::exp(x - m);
        lse[size_t((b * Hq + h) * Sq + i)] = m + std::log(z);
        for (int64_t d = 0; d < Dv; ++d) {
          double o = 0;
          for (int64_t j = 0; j < Sk; ++j)
            o +=
                std::exp(logits[size_t(j)] - m) / z * vv[size_t(((b * Sk + j) * Hkv + g) * Dv + d)];
          out[size_t(((b * Sq + i) * Hq + h) * Dv + d)] = o;
        }
      }
  return {Tensor::from_vector(out, {B, Sq, Hq, Dv}), Tensor::from_vector(lse, {B, Hq, Sq})};
}

TEST(AttentionOffset, ForwardMatchesDenseReference) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const std::vector<Chunk> chunks = {
      {5, 12, 7},         // the last chunk of a sequence: row 4 sees every key
      {4, 9, 2},          // nothing clipped; keys 6..8 seen by no row
      {3, 10, 7},         // bottom-right aligned: the last row sees all keys
      {5, 6, 3},          // rows 2..4 clipped at Sk - 1
      {7, 4, 1},          // Sq > Sk: rows 2..6 see all keys
      {4, 5, 100},        // an offset past the keys: full attention
      {3, 3, 0},          // the plain decoder mask
      {5, 11, 0, false},  // full attention, Sq != Sk
      {6, 2, 0, false},   // full attention, Sq > Sk
  };
  uint64_t s = seed;
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd})
    for (const Chunk& c : chunks) {
      SCOPED_TRACE(testing::Message() << c << " " << layout_name(layout));
      const Tensor q = test::random_normal({kB, c.sq, kHq, kD}, DType::f64, ++s);
      const Tensor k = test::random_normal({kB, c.sk, kHkv, kD}, DType::f64, ++s);
      const Tensor v = test::random_normal({kB, c.sk, kHkv, kDv}, DType::f64, ++s);
      AttentionOptions o = options_for(c, layout);
      o.softmax_scale = 0.71;
      const AttentionOutput got =
          attention_forward(in_layout(q, layout), in_layout(k, layout), in_layout(v, layout), o);
      const AttentionOutput want = dense_reference(q, k, v, 0.71, c.causal, c.offset);
      EXPECT_EQ(got.out.shape(), in_layout(want.out, layout).shape());
      EXPECT_EQ(got.lse.shape(), (Shape{kB, kHq, c.sq}));
      EXPECT_TRUE(test::close_as(in_layout(got.out, layout), want.out, DType::f64, "out"));
      EXPECT_TRUE(test::close_as(got.lse, want.lse, DType::f64, "lse"));
    }
}

// The context-parallel identity: queries [o, o + Sq) of a sequence of T = Sk over all its keys
// with causal_offset o are rows [o, o + Sq) of the whole call. The whole call's dout is zero
// outside the chunk, so its dk, dv sum the chunk's rows only. Every sum the CPU forms meets the
// same terms in the same order (plus exact zeros), hence equality, not a tolerance.
TEST(AttentionOffset, ChunkEqualsRowsOfTheWholeSequence) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const std::vector<Chunk> chunks = {
      {5, 12, 7},         // odd sizes, the sequence's last chunk
      {3, 3, 0},          // the whole sequence
      {4, 9, 2},          // a middle chunk: nothing clipped
      {1, 8, 5},          // one row
      {5, 11, 3, false},  // full attention
  };
  uint64_t s = seed;
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd})
    for (const Chunk& c : chunks) {
      SCOPED_TRACE(testing::Message() << c << " " << layout_name(layout));
      const int64_t T = c.sk, seq_dim = layout == AttentionLayout::bshd ? 1 : 0;
      const Tensor qw = in_layout(test::random_normal({kB, T, kHq, kD}, DType::f64, ++s), layout);
      const Tensor k = in_layout(test::random_normal({kB, T, kHkv, kD}, DType::f64, ++s), layout);
      const Tensor v = in_layout(test::random_normal({kB, T, kHkv, kDv}, DType::f64, ++s), layout);
      const Tensor dc =
          in_layout(test::random_normal({kB, c.sq, kHq, kDv}, DType::f64, ++s), layout);
      // The whole call's dout: the chunk's rows, zeros elsewhere.
      std::vector<Tensor> parts;
      if (c.offset > 0) parts.push_back(zero_rows(c.offset, layout));
      parts.push_back(dc);
      if (c.offset + c.sq < T) parts.push_back(zero_rows(T - c.offset - c.sq, layout));
      const Tensor dw = test::concat_dim(parts, seq_dim);

      AttentionOptions whole_options = options_for(c, layout);
      whole_options.causal_offset = 0;
      const AttentionOutput whole = attention_forward(qw, k, v, whole_options);
      const AttentionGrads wg =
          attention_backward(dw, qw, k, v, whole.out, whole.lse, whole_options);

      const AttentionOptions o = options_for(c, layout);
      const Tensor qc = test::slice_dim(qw, seq_dim, c.offset, c.sq);
      const AttentionOutput chunk = attention_forward(qc, k, v, o);
      const AttentionGrads cg = attention_backward(dc, qc, k, v, chunk.out, chunk.lse, o);
      EXPECT_TRUE(
          test::equal(chunk.out, test::slice_dim(whole.out, seq_dim, c.offset, c.sq), "out"));
      EXPECT_TRUE(test::equal(chunk.lse, test::slice_dim(whole.lse, 2, c.offset, c.sq), "lse"));
      EXPECT_TRUE(test::equal(cg.q, test::slice_dim(wg.q, seq_dim, c.offset, c.sq), "dq"));
      EXPECT_TRUE(test::equal(cg.k, wg.k, "dk"));
      EXPECT_TRUE(test::equal(cg.v, wg.v, "dv"));

      // The offset matters: the chunk under the plain mask (j <= i) differs.
      if (c.causal && c.offset > 0) {
        AttentionOptions ignored = o;
        ignored.causal_offset = 0;
        const AttentionOutput wrong = attention_forward(qc, k, v, ignored);
        EXPECT_FALSE(test::close_as(wrong.out, test::slice_dim(whole.out, seq_dim, c.offset, c.sq),
                                    DType::f64));
        const AttentionGrads wrong_g =
            attention_backward(dc, qc, k, v, wrong.out, wrong.lse, ignored);
        EXPECT_FALSE(test::close_as(wrong_g.k, wg.k, DType::f64));
      }
    }
}

// dq, dk, dv against central finite differences of L = <out, w> in fp64 (YaRN-like scale).
TEST(AttentionOffset, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const std::vector<Chunk> chunks = {
      {5, 12, 7}, {4, 9, 2}, {5, 6, 3}, {6, 4, 1}, {5, 11, 0, false}};
  uint64_t s = seed;
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd})
    for (const Chunk& c : chunks) {
      SCOPED_TRACE(testing::Message() << c << " " << layout_name(layout));
      Tensor q = in_layout(test::random_normal({kB, c.sq, kHq, kD}, DType::f64, ++s), layout);
      Tensor k = in_layout(test::random_normal({kB, c.sk, kHkv, kD}, DType::f64, ++s), layout);
      Tensor v = in_layout(test::random_normal({kB, c.sk, kHkv, kDv}, DType::f64, ++s), layout);
      AttentionOptions o = options_for(c, layout);
      o.softmax_scale = 0.61;
      const AttentionOutput fwd = attention_forward(q, k, v, o);
      const Tensor w = test::random_normal(fwd.out.shape(), DType::f64, ++s);
      auto loss = [&] { return test::dot(attention_forward(q, k, v, o).out, w); };
      const AttentionGrads g = attention_backward(w, q, k, v, fwd.out, fwd.lse, o);
      EXPECT_TRUE(test::close(g.q, test::numerical_gradient(loss, q), test::kGradCheckTol, "dq"));
      EXPECT_TRUE(test::close(g.k, test::numerical_gradient(loss, k), test::kGradCheckTol, "dk"));
      EXPECT_TRUE(test::close(g.v, test::numerical_gradient(loss, v), test::kGradCheckTol, "dv"));
    }
}

// Keys no row sees get zero gradients; an offset of at least Sk - 1 is full attention; full
// attention ignores the offset; Sq = 0 gives empty outputs and zero dk, dv.
TEST(AttentionOffset, EdgeCases) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor q = test::random_normal({kB, 4, kHq, kD}, DType::f64, seed);
  const Tensor k = test::random_normal({kB, 9, kHkv, kD}, DType::f64, seed + 1);
  const Tensor v = test::random_normal({kB, 9, kHkv, kDv}, DType::f64, seed + 2);
  const Tensor dout = test::random_normal({kB, 4, kHq, kDv}, DType::f64, seed + 3);
  AttentionOptions o;
  o.causal_offset = 2;  // rows see keys up to 2..5: keys 6..8 unseen
  const AttentionOutput r = attention_forward(q, k, v, o);
  const AttentionGrads g = attention_backward(dout, q, k, v, r.out, r.lse, o);
  const Tensor zk = Tensor::zeros({kB, 3, kHkv, kD}, DType::f64);
  const Tensor zv = Tensor::zeros({kB, 3, kHkv, kDv}, DType::f64);
  EXPECT_TRUE(test::equal(test::slice_dim(g.k, 1, 6, 3), zk, "dk of unseen keys"));
  EXPECT_TRUE(test::equal(test::slice_dim(g.v, 1, 6, 3), zv, "dv of unseen keys"));
  EXPECT_FALSE(test::equal(test::slice_dim(g.k, 1, 5, 1), test::slice_dim(zk, 1, 0, 1)));

  AttentionOptions full;
  full.causal = false;
  for (int64_t offset : {8, 9, 1000}) {
    o.causal_offset = offset;
    EXPECT_TRUE(
        test::equal(attention_forward(q, k, v, o).out, attention_forward(q, k, v, full).out));
  }
  full.causal_offset = 3;  // ignored when not causal
  AttentionOptions full0;
  full0.causal = false;
  EXPECT_TRUE(
      test::equal(attention_forward(q, k, v, full).out, attention_forward(q, k, v, full0).out));

  o.causal_offset = 1;
  const Tensor q0 = Tensor::empty({kB, 0, kHq, kD}, DType::f64);
  const AttentionOutput e = attention_forward(q0, k, v, o);
  EXPECT_EQ(e.out.shape(), (Shape{kB, 0, kHq, kDv}));
  EXPECT_EQ(e.lse.shape(), (Shape{kB, kHq, 0}));
  const AttentionGrads eg = attention_backward(e.out, q0, k, v, e.out, e.lse, o);
  EXPECT_EQ(eg.q.shape(), q0.shape());
  EXPECT_TRUE(test::equal(eg.k, Tensor::zeros(k.shape(), DType::f64), "dk"));
  EXPECT_TRUE(test::equal(eg.v, Tensor::zeros(v.shape(), DType::f64), "dv"));
}

TEST(AttentionOffset, RejectsBadInput) {
  const auto t = [](Shape s) { return Tensor::zeros(s, DType::f32); };
  const Tensor q = t({2, 5, 4, 8}), k = t({2, 11, 2, 8}), v = t({2, 11, 2, 3});
  EXPECT_NO_THROW(attention_forward(q, k, v));
  // No keys for 5 query rows, causal or not.
  for (bool causal : {true, false}) {
    AttentionOptions o;
    o.causal = causal;
    const std::string m = test::message_of([&] {
      (void)attention_forward(q, t({2, 0, 2, 8}), t({2, 0, 2, 3}), o);
    });
    EXPECT_NE(m.find("key"), std::string::npos) << m;
  }
  AttentionOptions negative;
  negative.causal_offset = -1;
  const std::string m = test::message_of([&] { (void)attention_forward(q, k, v, negative); });
  EXPECT_NE(m.find("causal_offset"), std::string::npos) << m;
  EXPECT_THROW(attention_forward(q, k, t({2, 10, 2, 3})), moe::Error);  // Sk of v != Sk of k
  AttentionOptions sbhd;
  sbhd.layout = AttentionLayout::sbhd;  // q is [Sq=2, B=5, ..]: k must be [Sk, 5, 2, 8]
  EXPECT_NO_THROW(attention_forward(q, t({7, 5, 2, 8}), t({7, 5, 2, 3}), sbhd));
  EXPECT_THROW(attention_forward(q, t({7, 2, 2, 8}), t({7, 2, 2, 3}), sbhd), moe::Error);

  const AttentionOutput r = attention_forward(q, k, v);
  EXPECT_NO_THROW(attention_backward(r.out, q, k, v, r.out, r.lse));
  EXPECT_THROW(attention_backward(r.out, q, k, v, r.out, t({2, 4, 11})),
               moe::Error);  // lse [.., Sk]
  EXPECT_THROW(attention_backward(t({2, 11, 4, 3}), q, k, v, r.out, r.lse), moe::Error);  // dout
}

// Attention dropout of a chunk: queries [o, o + Sq) over keys [0, T) with query_offset o (the
// dropout index) and causal_offset o (the mask) draw the whole sequence's masks, so they equal
// the whole call's rows as without dropout; seq_total 0 defaults to max(Sq, Sk) = T.
TEST(AttentionOffset, DropoutChunkDrawsTheWholeSequencesMasks) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t T = 12, Sq = 5, o = 7;
  uint64_t s = seed;
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd})
    for (int64_t seq_total : {int64_t(0), T}) {
      SCOPED_TRACE(testing::Message() << layout_name(layout) << " seq_total " << seq_total);
      const int64_t seq_dim = layout == AttentionLayout::bshd ? 1 : 0;
      const Tensor qw = in_layout(test::random_normal({kB, T, kHq, kD}, DType::f64, ++s), layout);
      const Tensor k = in_layout(test::random_normal({kB, T, kHkv, kD}, DType::f64, ++s), layout);
      const Tensor v = in_layout(test::random_normal({kB, T, kHkv, kDv}, DType::f64, ++s), layout);
      const Tensor dc = in_layout(test::random_normal({kB, Sq, kHq, kDv}, DType::f64, ++s), layout);
      const Tensor dw = test::concat_dim({zero_rows(o, layout), dc}, seq_dim);
      AttentionOptions whole;
      whole.layout = layout;
      whole.dropout.p = 0.3;
      whole.dropout.key = dropout_key(++s, 2, DropoutSite::attention_probs);
      whole.dropout.first_sample = 5;
      const AttentionOutput wf = attention_forward(qw, k, v, whole);
      const AttentionGrads wg = attention_backward(dw, qw, k, v, wf.out, wf.lse, whole);

      AttentionOptions chunk = whole;
      chunk.causal_offset = o;
      chunk.dropout.query_offset = o;
      chunk.dropout.seq_total = seq_total;
      const Tensor qc = test::slice_dim(qw, seq_dim, o, Sq);
      const AttentionOutput cf = attention_forward(qc, k, v, chunk);
      const AttentionGrads cg = attention_backward(dc, qc, k, v, cf.out, cf.lse, chunk);
      EXPECT_TRUE(test::equal(cf.out, test::slice_dim(wf.out, seq_dim, o, Sq), "out"));
      EXPECT_TRUE(test::equal(cg.q, test::slice_dim(wg.q, seq_dim, o, Sq), "dq"));
      EXPECT_TRUE(test::equal(cg.k, wg.k, "dk"));
      EXPECT_TRUE(test::equal(cg.v, wg.v, "dv"));
      // Without the dropout offset the chunk draws other masks.
      AttentionOptions wrong = chunk;
      wrong.dropout.query_offset = 0;
      EXPECT_FALSE(test::equal(attention_forward(qc, k, v, wrong).out, cf.out));
    }
}

// The dropout blocks are checked with Sq for the queries and Sk for the keys.
TEST(AttentionOffset, DropoutBlocksUseTheirOwnLengths) {
  const auto t = [](Shape s) { return Tensor::zeros(s, DType::f32); };
  const auto message = [&](int64_t sq, int64_t sk, int64_t query_offset, int64_t key_offset,
                           int64_t seq_total) {
    AttentionOptions o;
    o.causal = false;
    o.dropout.p = 0.5;
    o.dropout.query_offset = query_offset;
    o.dropout.key_offset = key_offset;
    o.dropout.seq_total = seq_total;
    const Tensor q = t({1, sq, 2, 4});
    return test::message_of([&] {
      (void)attention_forward(q, t({1, sk, 1, 4}), t({1, sk, 1, 4}), o);
    });
  };
  // seq_total 0: S_total = max(Sq, Sk).
  EXPECT_EQ(message(5, 12, 7, 0, 0), "");
  EXPECT_NE(message(5, 12, 8, 0, 0).find("query_offset 8"), std::string::npos);
  EXPECT_NE(message(5, 12, 0, 1, 0).find("key_offset 1"), std::string::npos);  // 1 + 12 > 12
  EXPECT_EQ(message(12, 5, 0, 7, 0), "");
  EXPECT_NE(message(12, 5, 0, 8, 0).find("key_offset 8"), std::string::npos);
  EXPECT_NE(message(12, 5, 1, 0, 0).find("query_offset 1"), std::string::npos);
  // An explicit seq_total.
  EXPECT_EQ(message(5, 12, 15, 8, 20), "");
  EXPECT_NE(message(5, 12, 16, 0, 20).find("query_offset 16"), std::string::npos);
  EXPECT_NE(message(5, 12, 0, 9, 20).find("key_offset 9"), std::string::npos);
}

}  // namespace
}  // namespace moe::ops
