// CUDA merge of partial attention (ops/attention_merge.h) against the CPU reference on the same
// values: f32 and bf16 out, both layouts, row slices (row_begin), rows of every kind (both
// sides seen, ties, one side or both unseen), head dims that take the packed and the scalar
// paths, rows spanning several warps, misaligned tensors; an unseen accumulator holding NaN takes
// the block exactly; repeated runs give the same bits; attention over split keys merged on the
// GPU equals the whole attention; and the CUDA dtype error.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "common/check.h"
#include "moe/ops/attention.h"
#include "moe/ops/attention_merge.h"

namespace moe::ops {
namespace {

using test::host;

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Case {
  int64_t batch, acc_seq, block_seq, heads, v_head_dim, row_begin;
  AttentionLayout layout;
};

std::ostream& operator<<(std::ostream& out, const Case& c) {
  return out << "B=" << c.batch << " Sq=" << c.acc_seq << " n=" << c.block_seq << " Hq=" << c.heads
             << " Dv=" << c.v_head_dim << " row_begin=" << c.row_begin
             << (c.layout == AttentionLayout::bshd ? " bshd" : " sbhd");
}

Shape out_shape(const Case& c, int64_t seq) {
  if (c.layout == AttentionLayout::bshd) return {c.batch, seq, c.heads, c.v_head_dim};
  return {seq, c.batch, c.heads, c.v_head_dim};
}

// lse [B, Hq, S] in [-20, 20] with, per (b, h), row 0 unseen (-inf), and row 1 unseen when
// `unseen_row_1` (so that with the other side's pattern a row may be unseen on both sides).
Tensor random_lse(const Case& c, int64_t seq, uint64_t seed, bool unseen_row_1) {
  std::vector<double> x =
      test::random_uniform({c.batch, c.heads, seq}, DType::f64, seed, -20, 20).to_double_vector();
  for (int64_t r = 0; r < c.batch * c.heads; ++r) {
    if (seq > 0) x[size_t(r * seq)] = -kInf;
    if (seq > 1 && unseen_row_1) x[size_t(r * seq + 1)] = -kInf;
  }
  return Tensor::from_vector(x, {c.batch, c.heads, seq}).to(DType::f32);
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = [] {
    std::vector<Case> v;
    for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
      v.push_back({2, 7, 7, 3, 5, 0, layout});      // odd Dv: one element per thread
      v.push_back({2, 9, 4, 6, 64, 5, layout});     // the last rows, packed
      v.push_back({3, 10, 3, 2, 128, 4, layout});   // rows in the middle
      v.push_back({1, 33, 33, 4, 256, 0, layout});  // f32 rows over 2 warps
      v.push_back({2, 5, 2, 2, 1000, 1, layout});   // rows over 8 warps (unpacked: 4 steps)
      v.push_back({2, 6, 0, 3, 16, 6, layout});     // an empty block at the end
    }
    return v;
  }();
  return all;
}

// The CUDA merge and the CPU merge of the same values (acc and block in dtype dt).
void check_case(const Case& c, DType dt, uint64_t seed, bool misaligned) {
  SCOPED_TRACE(testing::Message() << c << " " << dt << (misaligned ? " misaligned" : ""));
  const Tensor out_acc = test::random_normal(out_shape(c, c.acc_seq), dt, seed);
  const Tensor out_b = test::random_normal(out_shape(c, c.block_seq), dt, seed + 1);
  // Rows 0 of both unseen; rows 1 of the accumulator unseen; row 2 a tie.
  Tensor lse_acc = random_lse(c, c.acc_seq, seed + 2, true);
  Tensor lse_b = random_lse(c, c.block_seq, seed + 3, false);
  if (c.block_seq > 2) {
    std::vector<double> la = lse_acc.to_double_vector(), lb = lse_b.to_double_vector();
    for (int64_t r = 0; r < c.batch * c.heads; ++r)
      lb[size_t(r * c.block_seq + 2)] = la[size_t(r * c.acc_seq + c.row_begin + 2)];
    lse_b = Tensor::from_vector(lb, lse_b.shape()).to(DType::f32);
  }

  Tensor want_out = out_acc.clone(), want_lse = lse_acc.clone();
  attention_merge_(want_out, want_lse, out_b, lse_b, c.layout, c.row_begin);

  auto to_gpu = [&](const Tensor& t) {
    return misaligned ? test::misaligned_gpu(t) : test::gpu(t);
  };
  Tensor got_out = to_gpu(out_acc), got_lse = to_gpu(lse_acc);
  const Tensor dev_b = to_gpu(out_b), dev_lse_b = to_gpu(lse_b);
  attention_merge_(got_out, got_lse, dev_b, dev_lse_b, c.layout, c.row_begin);
  ASSERT_TRUE(got_out.is_cuda());
  // The same rule in the same order: only expf / log1pf and contractions differ from the CPU
  // (in bf16, an element may round to the neighbouring value).
  EXPECT_TRUE(test::close_as(host(got_out), want_out, dt, "out"));
  std::vector<double> g = host(got_lse).to_double_vector(), w = want_lse.to_double_vector();
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_EQ(g[i] == -kInf, w[i] == -kInf) << "lse element " << i;
    if (w[i] == -kInf) g[i] = w[i] = 0;
  }
  EXPECT_LE(test::relative_error(g, w), test::tolerance(DType::f32)) << "lse";
}

TEST(AttentionMergeCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16})
    for (const Case& c : cases())
      for (bool misaligned : {false, true}) check_case(c, dt, s += 4, misaligned);
}

// An unseen accumulator (lse -inf) holding NaN takes the block bit for bit; the merge is
// deterministic.
TEST(AttentionMergeCuda, UnseenAccumulatorAndDeterminism) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dt : {DType::f32, DType::bf16})
    for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
      SCOPED_TRACE(testing::Message()
                   << dt << (layout == AttentionLayout::bshd ? " bshd" : " sbhd"));
      const Case c{2, 8, 8, 4, 64, 0, layout};
      const Tensor out_b = test::random_normal(out_shape(c, 8), dt, seed, Device::cuda());
      const Tensor lse_b =
          test::random_uniform({2, 4, 8}, DType::f32, seed + 1, -5, 5, Device::cuda());
      Tensor acc = Tensor::full(out_shape(c, 8), std::nan(""), dt, Device::cuda());
      Tensor acc_lse = Tensor::full({2, 4, 8}, -kInf, DType::f32, Device::cuda());
      attention_merge_(acc, acc_lse, out_b, lse_b, layout);
      EXPECT_TRUE(test::equal(host(acc), host(out_b), "out"));
      EXPECT_TRUE(test::equal(host(acc_lse), host(lse_b), "lse"));

      const Tensor out_a = test::random_normal(out_shape(c, 8), dt, seed + 2, Device::cuda());
      const Tensor lse_a =
          test::random_uniform({2, 4, 8}, DType::f32, seed + 3, -5, 5, Device::cuda());
      Tensor first = out_a.clone(), first_lse = lse_a.clone();
      Tensor second = out_a.clone(), second_lse = lse_a.clone();
      attention_merge_(first, first_lse, out_b, lse_b, layout);
      attention_merge_(second, second_lse, out_b, lse_b, layout);
      EXPECT_TRUE(test::equal(host(first), host(second), "out, run twice"));
      EXPECT_TRUE(test::equal(host(first_lse), host(second_lse), "lse, run twice"));
    }
}

// Ring attention on the GPU: attention over keys [0, a) and [a, Sk) (the second block causal
// with its offset) merged equals the CPU attention over [0, Sk), up to the dtype's rounding.
TEST(AttentionMergeCuda, SplitKeysEqualWhole) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t B = 2, sq = 40, offset = 50, sk = offset + sq, split = 37, Hq = 8, Hkv = 2, D = 64,
                Dv = 32;
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16})
    for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
      SCOPED_TRACE(testing::Message()
                   << dt << (layout == AttentionLayout::bshd ? " bshd" : " sbhd"));
      const bool bshd = layout == AttentionLayout::bshd;
      auto shape = [&](int64_t seq, int64_t heads, int64_t dim) {
        return bshd ? Shape{B, seq, heads, dim} : Shape{seq, B, heads, dim};
      };
      const Tensor q = test::random_normal(shape(sq, Hq, D), dt, ++s, Device::cuda());
      const Tensor k = test::random_normal(shape(sk, Hkv, D), dt, ++s, Device::cuda());
      const Tensor v = test::random_normal(shape(sk, Hkv, Dv), dt, ++s, Device::cuda());
      // Keys [begin, begin + count): a row view in sbhd, a copy per batch entry in bshd.
      auto keys = [&](const Tensor& t, int64_t begin, int64_t count) -> Tensor {
        if (!bshd) return t.rows(begin, count);
        const Tensor h = host(t);
        const int64_t inner = t.size(2) * t.size(3);
        Tensor part = Tensor::empty({B, count, t.size(2), t.size(3)}, t.dtype());
        for (int64_t b = 0; b < B; ++b)
          part.rows(b, 1)
              .reshape({count * inner})
              .copy_(h.rows(b, 1).reshape({t.size(1) * inner}).rows(begin * inner, count * inner));
        return part.to(Device::cuda());
      };
      AttentionOptions whole;
      whole.layout = layout;
      whole.causal = true;
      whole.causal_offset = offset;
      whole.backend = AttentionBackend::native;
      // The CPU reference on the same values (in f32 for bf16).
      const DType rdt = test::reference_dtype(dt);
      const AttentionOutput want =
          attention_forward(host(q).to(rdt), host(k).to(rdt), host(v).to(rdt), whole);
      AttentionOptions first = whole;  // keys [0, split): every row sees them all
      first.causal = false;
      AttentionOptions second = whole;  // keys [split, sk): row i sees split + j <= i + offset
      second.causal_offset = offset - split;
      AttentionOutput acc = attention_forward(q, keys(k, 0, split), keys(v, 0, split), first);
      const AttentionOutput block =
          attention_forward(q, keys(k, split, sk - split), keys(v, split, sk - split), second);
      attention_merge_(acc.out, acc.lse, block.out, block.lse, layout);
      EXPECT_TRUE(test::close_as(host(acc.out), want.out, dt, "out"));
      EXPECT_TRUE(test::close_as(host(acc.lse), want.lse, DType::f32, "lse"));
    }
}

TEST(AttentionMergeCuda, Errors) {
  MOE_REQUIRE_GPU();
  Tensor out = Tensor::zeros({2, 3, 2, 4}, DType::f64, Device::cuda());
  Tensor lse = Tensor::zeros({2, 2, 3}, DType::f64, Device::cuda());
  const std::string m = test::message_of(
      [&] { attention_merge_(out, lse, out.clone(), lse.clone(), AttentionLayout::bshd); });
  EXPECT_NE(m.find("CUDA supports f32 and bf16"), std::string::npos) << m;
  Tensor out32 = Tensor::zeros({2, 3, 2, 4}, DType::f32, Device::cuda());
  Tensor lse32 = Tensor::zeros({2, 2, 3}, DType::f32, Device::cuda());
  EXPECT_THROW(attention_merge_(out32, lse32, host(out32), lse32, AttentionLayout::bshd),
               moe::Error);
}

}  // namespace
}  // namespace moe::ops
