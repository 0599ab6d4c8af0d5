// Merging partial attention (ops/attention_merge.h) on the CPU: attention of the queries over
// keys [0, S) equals the merge of attention over key blocks that split [0, S) (full attention,
// and causal with an offset where the earlier blocks are entirely visible and the last one is
// causal), for both layouts, GQA, D != Dv, odd sizes, in f64 (to 1e-12), f32, bf16 and f16; a
// block over the later query rows merged at row_begin (rows before it untouched, bit for bit);
// the merge against the formula written out; lse = -inf (an unseen accumulator takes the block
// exactly, whatever its out holds; an unseen block leaves the accumulator alone; both unseen give
// 0 and -inf); order independence (bitwise for a pair, up to rounding for a chain); that merges
// with wrong weights fail the same checks; and the errors.
#include "moe/ops/attention_merge.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/ops/attention.h"
#include "ops/attention_test_util.h"

namespace moe::ops {
namespace {

using test::in_layout;

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Heads {
  int64_t batch, q_heads, kv_heads, head_dim, v_head_dim;
};

const Heads kGqa{2, 6, 2, 5, 3};  // GQA, D != Dv, odd sizes
const Heads kMqa{1, 3, 1, 4, 8};  // MQA, Dv a multiple of 8

const char* layout_name(AttentionLayout layout) {
  return layout == AttentionLayout::bshd ? "bshd" : "sbhd";
}

DType lse_dtype(DType dt) {
  return dt == DType::f64 ? DType::f64 : DType::f32;
}

// Positions [begin, begin + count) of dim `dim` of a tensor (a copy, same dtype).
Tensor slice(const Tensor& t, int64_t dim, int64_t begin, int64_t count) {
  const Shape& s = t.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= s[size_t(d)];
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= s[size_t(d)];
  const std::vector<double> x = t.to_double_vector();
  std::vector<double> y;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = begin; i < begin + count; ++i)
      for (int64_t e = 0; e < inner; ++e)
        y.push_back(x[size_t((o * s[size_t(dim)] + i) * inner + e)]);
  Shape shape = s;
  shape[size_t(dim)] = count;
  return Tensor::from_vector(y, shape).to(t.dtype());
}

// Rows [begin, begin + count) of out in `layout` (returned bshd) and of lse [B, Hq, Sq].
Tensor out_rows(const Tensor& out, AttentionLayout layout, int64_t begin, int64_t count) {
  return slice(in_layout(out, layout), 1, begin, count);
}
Tensor lse_rows(const Tensor& lse, int64_t begin, int64_t count) {
  return slice(lse, 2, begin, count);
}

// q, k, v (bshd, f64, already rounded to the dtype under test).
struct Qkv {
  Tensor q, k, v;
};

Qkv random_qkv(const Heads& h, int64_t sq, int64_t sk, DType dt, uint64_t seed) {
  auto rounded = [&](const Shape& shape, uint64_t s) {
    return test::random_normal(shape, DType::f64, s).to(dt).to(DType::f64);
  };
  return {rounded({h.batch, sq, h.q_heads, h.head_dim}, seed),
          rounded({h.batch, sk, h.kv_heads, h.head_dim}, seed + 1),
          rounded({h.batch, sk, h.kv_heads, h.v_head_dim}, seed + 2)};
}

// Attention of query rows [q_begin, q_begin + q_count) over keys [k_begin, k_end) in dtype `dt`
// and `layout`. Causal: query row i sits at key position i + offset of the whole key sequence;
// a block whose keys all lie at or before the first row's position is run as full attention,
// any other with the causal mask shifted to the block (offset + q_begin - k_begin >= 0).
AttentionOutput attend(const Qkv& x, int64_t q_begin, int64_t q_count, int64_t k_begin,
                       int64_t k_end, bool causal, int64_t offset, DType dt,
                       AttentionLayout layout) {
  AttentionOptions o;
  o.layout = layout;
  o.softmax_scale = 0.63;
  const int64_t first_row_position = q_begin + offset;
  o.causal = causal && k_end - 1 > first_row_position;
  if (o.causal) {
    o.causal_offset = first_row_position - k_begin;
    MOE_CHECK(o.causal_offset >= 0, "test: a causal block must start at or before its first row");
  }
  auto part = [&](const Tensor& t, int64_t begin, int64_t count) {
    return in_layout(slice(t, 1, begin, count).to(dt), layout);
  };
  return attention_forward(part(x.q, q_begin, q_count), part(x.k, k_begin, k_end - k_begin),
                           part(x.v, k_begin, k_end - k_begin), o);
}

// An unseen accumulator: lse -inf and out `fill` (0, or NaN for "any values").
AttentionOutput empty_accumulator(const Heads& h, int64_t sq, DType dt, AttentionLayout layout,
                                  double fill = 0.0) {
  const Shape bshd{h.batch, sq, h.q_heads, h.v_head_dim};
  const Shape shape =
      layout == AttentionLayout::bshd ? bshd : Shape{sq, h.batch, h.q_heads, h.v_head_dim};
  return {Tensor::full(shape, fill, dt),
          Tensor::full({h.batch, h.q_heads, sq}, -kInf, lse_dtype(dt))};
}

AttentionOutput copy_of(const AttentionOutput& a) {
  return {a.out.clone(), a.lse.clone()};
}

// Key blocks [bounds[j], bounds[j + 1]) of one problem (bounds from 0 to Sk).
struct Split {
  int64_t sq, sk;
  std::vector<int64_t> bounds;
  bool causal = false;
  int64_t offset = 0;  // query row i at key position i + offset (causal)
};

std::ostream& operator<<(std::ostream& out, const Split& s) {
  out << "Sq=" << s.sq << " Sk=" << s.sk << (s.causal ? " causal offset " : " full")
      << (s.causal ? std::to_string(s.offset) : "") << " blocks at";
  for (int64_t b : s.bounds) out << " " << b;
  return out;
}

// The whole problem against the merge of its key blocks (the accumulator starts as the first
// block's result), in `dt` against the f64 whole-sequence reference on the same rounded inputs.
void check_split(const Heads& h, const Split& s, DType dt, AttentionLayout layout, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << s << " " << dt << " " << layout_name(layout));
  const Qkv x = random_qkv(h, s.sq, s.sk, dt, seed);
  const AttentionOutput want =
      attend(x, 0, s.sq, 0, s.sk, s.causal, s.offset, DType::f64, AttentionLayout::bshd);
  AttentionOutput acc =
      attend(x, 0, s.sq, s.bounds[0], s.bounds[1], s.causal, s.offset, dt, layout);
  for (size_t j = 1; j + 1 < s.bounds.size(); ++j) {
    const AttentionOutput block =
        attend(x, 0, s.sq, s.bounds[j], s.bounds[j + 1], s.causal, s.offset, dt, layout);
    attention_merge_(acc.out, acc.lse, block.out, block.lse, layout);
  }
  EXPECT_EQ(acc.out.dtype(), dt);
  EXPECT_TRUE(test::close_as(in_layout(acc.out, layout), want.out, dt, "out"));
  EXPECT_TRUE(test::close_as(acc.lse, want.lse, lse_dtype(dt), "lse"));
}

const std::vector<Split>& full_splits() {
  static const std::vector<Split> splits = {
      {5, 7, {0, 3, 7}},        // Sq != Sk
      {7, 7, {0, 1, 7}},        // a one-key block
      {3, 11, {0, 6, 10, 11}},  // three blocks
      {1, 4, {0, 2, 4}},        // one query row
  };
  return splits;
}

const std::vector<Split>& causal_splits() {
  static const std::vector<Split> splits = {
      // the last chunk of a sequence: keys [0, 7) seen by every row, [7, 12) causal
      {5, 12, {0, 7, 12}, true, 7},  {5, 12, {0, 4, 12}, true, 7},
      {6, 9, {0, 2, 3, 9}, true, 3},  // two full blocks, then the diagonal
      {4, 12, {0, 5, 12}, true, 9},   // row 3 clipped at Sk - 1 (9 + 3 > 11)
      {3, 3, {0, 3}, true, 0},        // one block: nothing to merge
  };
  return splits;
}

TEST(AttentionMerge, SplitKeysEqualWholeF64) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd})
    for (const Heads& h : {kGqa, kMqa}) {
      for (const Split& split : full_splits()) check_split(h, split, DType::f64, layout, s += 3);
      for (const Split& split : causal_splits()) check_split(h, split, DType::f64, layout, s += 3);
    }
}

TEST(AttentionMerge, SplitKeysEqualWholeLowPrecision) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16, DType::f16})
    for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
      for (const Split& split : full_splits()) check_split(kGqa, split, dt, layout, s += 3);
      for (const Split& split : causal_splits()) check_split(kGqa, split, dt, layout, s += 3);
    }
}

// A causal query chunk of Sq rows at key position o over keys [0, o + Sq): block A is all rows
// over keys [0, o + half) (causal, offset o: rows < half see their whole range in it); block B
// is rows [half, Sq) over keys [o + half, o + Sq) (the chunk's lower diagonal block, offset 0),
// which rows < half never see. B merged at row_begin = half gives the whole causal call, and
// leaves rows < half exactly as A had them.
TEST(AttentionMerge, RowSliceCausal) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  struct Case {
    int64_t sq, half, offset;
  };
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd})
      for (const Case c : {Case{8, 4, 8}, Case{7, 3, 5}, Case{5, 4, 0}, Case{6, 1, 2}}) {
        SCOPED_TRACE(testing::Message() << "Sq=" << c.sq << " half=" << c.half << " offset="
                                        << c.offset << " " << dt << " " << layout_name(layout));
        const int64_t sk = c.offset + c.sq;
        const Qkv x = random_qkv(kGqa, c.sq, sk, dt, s += 3);
        const AttentionOutput want =
            attend(x, 0, c.sq, 0, sk, true, c.offset, DType::f64, AttentionLayout::bshd);
        const AttentionOutput a =
            attend(x, 0, c.sq, 0, c.offset + c.half, true, c.offset, dt, layout);
        const AttentionOutput b =
            attend(x, c.half, c.sq - c.half, c.offset + c.half, sk, true, c.offset, dt, layout);
        AttentionOutput acc = copy_of(a);
        attention_merge_(acc.out, acc.lse, b.out, b.lse, layout, c.half);
        EXPECT_TRUE(test::close_as(in_layout(acc.out, layout), want.out, dt, "out"));
        EXPECT_TRUE(test::close_as(acc.lse, want.lse, lse_dtype(dt), "lse"));
        EXPECT_TRUE(test::equal(out_rows(acc.out, layout, 0, c.half),
                                out_rows(a.out, layout, 0, c.half), "untouched out rows"));
        EXPECT_TRUE(test::equal(lse_rows(acc.lse, 0, c.half), lse_rows(a.lse, 0, c.half),
                                "untouched lse rows"));
      }
}

// Full attention: rows [begin, begin + n) over keys K1 and K2 from a merge of all rows over K1
// and those rows over K2, at a row_begin in the middle (rows after the block untouched too).
TEST(AttentionMerge, RowSliceInTheMiddle) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t sq = 9, sk = 7, split = 3, begin = 2, n = 4;
  for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
    SCOPED_TRACE(layout_name(layout));
    const Qkv x = random_qkv(kGqa, sq, sk, DType::f64, seed);
    const AttentionOutput want =
        attend(x, begin, n, 0, sk, false, 0, DType::f64, AttentionLayout::bshd);
    const AttentionOutput a = attend(x, 0, sq, 0, split, false, 0, DType::f64, layout);
    const AttentionOutput b = attend(x, begin, n, split, sk, false, 0, DType::f64, layout);
    AttentionOutput acc = copy_of(a);
    attention_merge_(acc.out, acc.lse, b.out, b.lse, layout, begin);
    EXPECT_TRUE(test::close_as(out_rows(acc.out, layout, begin, n), want.out, DType::f64, "out"));
    EXPECT_TRUE(test::close_as(lse_rows(acc.lse, begin, n), want.lse, DType::f64, "lse"));
    for (const auto& [from, count] :
         {std::pair<int64_t, int64_t>{0, begin}, {begin + n, sq - begin - n}}) {
      EXPECT_TRUE(test::equal(out_rows(acc.out, layout, from, count),
                              out_rows(a.out, layout, from, count), "untouched out rows"));
      EXPECT_TRUE(test::equal(lse_rows(acc.lse, from, count), lse_rows(a.lse, from, count),
                              "untouched lse rows"));
    }
  }
}

// The merge formula written out (attention_merge.h's first form) in f64, bshd.
AttentionOutput formula_merge(const AttentionOutput& acc, const AttentionOutput& blk) {
  const int64_t B = acc.out.size(0), S = acc.out.size(1), H = acc.out.size(2), Dv = acc.out.size(3);
  std::vector<double> oa = acc.out.to_double_vector(), ob = blk.out.to_double_vector();
  std::vector<double> la = acc.lse.to_double_vector(), lb = blk.lse.to_double_vector();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const size_t l = size_t((b * H + h) * S + i);
        const double m = std::max(la[l], lb[l]);
        const double lse =
            m == -kInf ? -kInf : m + std::log(std::exp(la[l] - m) + std::exp(lb[l] - m));
        for (int64_t d = 0; d < Dv; ++d) {
          const size_t e = size_t(((b * S + i) * H + h) * Dv + d);
          double o = 0;
          if (la[l] != -kInf) o += std::exp(la[l] - lse) * oa[e];
          if (lb[l] != -kInf) o += std::exp(lb[l] - lse) * ob[e];
          oa[e] = o;
        }
        la[l] = lse;
      }
  return {Tensor::from_vector(oa, acc.out.shape()), Tensor::from_vector(la, acc.lse.shape())};
}

// lse: equal -inf positions, and the finite entries close.
testing::AssertionResult lse_close(const Tensor& got, const Tensor& want, double tol) {
  std::vector<double> g = got.to_double_vector(), w = want.to_double_vector();
  if (g.size() != w.size()) return testing::AssertionFailure() << "lse sizes differ";
  for (size_t i = 0; i < g.size(); ++i) {
    if ((g[i] == -kInf) != (w[i] == -kInf))
      return testing::AssertionFailure()
             << "lse element " << i << " is " << g[i] << ", expected " << w[i];
    if (w[i] == -kInf) g[i] = w[i] = 0;
  }
  const double err = test::relative_error(g, w);
  if (err <= tol) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "lse relative error " << err << " > " << tol;
}

// Random outs and lse (wide range, ties, one side or both -inf) against the formula.
TEST(AttentionMerge, MatchesTheFormula) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t B = 2, S = 11, H = 3, Dv = 5;
  uint64_t s = seed;
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dt);
    const DType ldt = lse_dtype(dt);
    AttentionOutput acc{test::random_normal({B, S, H, Dv}, dt, ++s),
                        test::random_uniform({B, H, S}, ldt, ++s, -40, 40)};
    AttentionOutput blk{test::random_normal({B, S, H, Dv}, dt, ++s),
                        test::random_uniform({B, H, S}, ldt, ++s, -40, 40)};
    // Per head: row 0 both unseen, 1 the accumulator unseen, 2 the block unseen, 3 a tie,
    // 4 close values, 5 far apart (the smaller side's weight underflows in f32).
    std::vector<double> la = acc.lse.to_double_vector(), lb = blk.lse.to_double_vector();
    for (int64_t r = 0; r < B * H; ++r) {
      double* a = &la[size_t(r * S)];
      double* b = &lb[size_t(r * S)];
      a[0] = b[0] = -kInf;
      a[1] = -kInf;
      b[2] = -kInf;
      b[3] = a[3];
      b[4] = a[4] + 1e-3;
      b[5] = a[5] - 120;
    }
    acc.lse = Tensor::from_vector(la, acc.lse.shape()).to(ldt);
    blk.lse = Tensor::from_vector(lb, blk.lse.shape()).to(ldt);
    const AttentionOutput want = formula_merge(acc, blk);
    attention_merge_(acc.out, acc.lse, blk.out, blk.lse, AttentionLayout::bshd);
    // The rounding of the result to dt is the only error beyond the compute type's.
    const double tol = dt == DType::f64 ? 1e-13 : test::tolerance(dt) / 2;
    EXPECT_TRUE(test::close(acc.out, want.out, tol, "out"));
    EXPECT_TRUE(lse_close(acc.lse, want.lse, dt == DType::f64 ? 1e-15 : 1e-6));
  }
}

// An unseen accumulator (lse -inf) takes the first block exactly, whatever its out holds
// (zeros, or NaN as from Tensor::empty); merging an unseen block changes nothing; both unseen
// give out 0 and lse -inf.
TEST(AttentionMerge, MinusInfinityMeansNoKeysYet) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  const int64_t sq = 5, sk = 6;
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16})
    for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd})
      for (double fill : {0.0, std::nan("")}) {
        SCOPED_TRACE(testing::Message() << dt << " " << layout_name(layout) << " fill " << fill);
        const Qkv x = random_qkv(kGqa, sq, sk, dt, s += 3);
        const AttentionOutput block = attend(x, 0, sq, 0, sk, false, 0, dt, layout);
        AttentionOutput acc = empty_accumulator(kGqa, sq, dt, layout, fill);
        attention_merge_(acc.out, acc.lse, block.out, block.lse, layout);
        EXPECT_TRUE(test::equal(acc.out, block.out, "out"));
        EXPECT_TRUE(test::equal(acc.lse, block.lse, "lse"));

        const AttentionOutput unseen = empty_accumulator(kGqa, sq, dt, layout, fill);
        attention_merge_(acc.out, acc.lse, unseen.out, unseen.lse, layout);
        EXPECT_TRUE(test::equal(acc.out, block.out, "out after an unseen block"));
        EXPECT_TRUE(test::equal(acc.lse, block.lse, "lse after an unseen block"));

        AttentionOutput nothing = empty_accumulator(kGqa, sq, dt, layout, fill);
        attention_merge_(nothing.out, nothing.lse, unseen.out, unseen.lse, layout);
        EXPECT_TRUE(test::equal(nothing.out, Tensor::zeros(nothing.out.shape(), dt), "out 0"));
        EXPECT_TRUE(test::equal(nothing.lse, unseen.lse, "lse -inf"));
      }
}

// Merging b into a and a into b give the same bits; a chain of three blocks from an empty
// accumulator gives the whole attention in every order, the orders agreeing up to rounding.
TEST(AttentionMerge, OrderIndependent) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  const int64_t sq = 6, sk = 10;
  const std::vector<int64_t> bounds = {0, 3, 4, 10};
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
      SCOPED_TRACE(testing::Message() << dt << " " << layout_name(layout));
      const Qkv x = random_qkv(kGqa, sq, sk, dt, s += 3);
      std::vector<AttentionOutput> blocks;
      for (size_t j = 0; j + 1 < bounds.size(); ++j)
        blocks.push_back(attend(x, 0, sq, bounds[j], bounds[j + 1], false, 0, dt, layout));

      AttentionOutput ab = copy_of(blocks[0]), ba = copy_of(blocks[1]);
      attention_merge_(ab.out, ab.lse, blocks[1].out, blocks[1].lse, layout);
      attention_merge_(ba.out, ba.lse, blocks[0].out, blocks[0].lse, layout);
      EXPECT_TRUE(test::equal(ab.out, ba.out, "out, a + b vs b + a"));
      EXPECT_TRUE(test::equal(ab.lse, ba.lse, "lse, a + b vs b + a"));

      const AttentionOutput want =
          attend(x, 0, sq, 0, sk, false, 0, DType::f64, AttentionLayout::bshd);
      std::vector<AttentionOutput> results;
      for (const std::vector<int>& order :
           {std::vector<int>{0, 1, 2}, {2, 0, 1}, {1, 2, 0}, {2, 1, 0}}) {
        AttentionOutput acc = empty_accumulator(kGqa, sq, dt, layout);
        for (int j : order)
          attention_merge_(acc.out, acc.lse, blocks[size_t(j)].out, blocks[size_t(j)].lse, layout);
        EXPECT_TRUE(test::close_as(in_layout(acc.out, layout), want.out, dt, "out"));
        EXPECT_TRUE(test::close_as(acc.lse, want.lse, lse_dtype(dt), "lse"));
        if (!results.empty()) {
          EXPECT_TRUE(test::close_as(acc.out, results[0].out, dt, "out between orders"));
          EXPECT_TRUE(test::close_as(acc.lse, results[0].lse, lse_dtype(dt), "lse between orders"));
        }
        results.push_back(std::move(acc));
      }
    }
}

// The checks above can fail: merges with the weights wrong (outs averaged, the lse ignored;
// exp(lse - max) not normalised; the lse left at the maximum) miss the whole attention by far
// more than even the bf16 tolerance.
TEST(AttentionMerge, WrongWeightsFailTheChecks) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t sq = 5, sk = 9, split = 4;
  const Qkv x = random_qkv(kGqa, sq, sk, DType::f64, seed);
  const AttentionOutput want = attend(x, 0, sq, 0, sk, false, 0, DType::f64, AttentionLayout::bshd);
  const AttentionOutput a = attend(x, 0, sq, 0, split, false, 0, DType::f64, AttentionLayout::bshd);
  const AttentionOutput b =
      attend(x, 0, sq, split, sk, false, 0, DType::f64, AttentionLayout::bshd);
  const std::vector<double> oa = a.out.to_double_vector(), ob = b.out.to_double_vector();
  const std::vector<double> la = a.lse.to_double_vector(), lb = b.lse.to_double_vector();
  const int64_t H = kGqa.q_heads, Dv = kGqa.v_head_dim;
  std::vector<double> averaged(oa.size()), unnormalised(oa.size()), max_lse(la.size());
  for (int64_t bb = 0; bb < kGqa.batch; ++bb)
    for (int64_t i = 0; i < sq; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const size_t l = size_t((bb * H + h) * sq + i);
        const double m = std::max(la[l], lb[l]);
        max_lse[l] = m;
        for (int64_t d = 0; d < Dv; ++d) {
          const size_t e = size_t(((bb * sq + i) * H + h) * Dv + d);
          averaged[e] = 0.5 * (oa[e] + ob[e]);
          unnormalised[e] = std::exp(la[l] - m) * oa[e] + std::exp(lb[l] - m) * ob[e];
        }
      }
  const double bf16_tol = test::tolerance(DType::bf16);
  EXPECT_FALSE(test::close(Tensor::from_vector(averaged, want.out.shape()), want.out, bf16_tol));
  EXPECT_FALSE(
      test::close(Tensor::from_vector(unnormalised, want.out.shape()), want.out, bf16_tol));
  EXPECT_FALSE(test::close(Tensor::from_vector(max_lse, want.lse.shape()), want.lse, bf16_tol));
  // ... while the op passes at f64's.
  AttentionOutput acc = copy_of(a);
  attention_merge_(acc.out, acc.lse, b.out, b.lse, AttentionLayout::bshd);
  EXPECT_TRUE(test::close_as(acc.out, want.out, DType::f64, "out"));
  EXPECT_TRUE(test::close_as(acc.lse, want.lse, DType::f64, "lse"));
}

TEST(AttentionMerge, EmptyBlocksAndBatches) {
  const Heads h = kGqa;
  // n = 0 rows: nothing changes.
  AttentionOutput acc{test::random_normal({h.batch, 4, h.q_heads, h.v_head_dim}, DType::f32, 1),
                      test::random_normal({h.batch, h.q_heads, 4}, DType::f32, 2)};
  const AttentionOutput before = copy_of(acc);
  const Tensor no_out = Tensor::zeros({h.batch, 0, h.q_heads, h.v_head_dim}, DType::f32);
  const Tensor no_lse = Tensor::zeros({h.batch, h.q_heads, 0}, DType::f32);
  for (int64_t begin : {0, 2, 4})
    attention_merge_(acc.out, acc.lse, no_out, no_lse, AttentionLayout::bshd, begin);
  EXPECT_TRUE(test::equal(acc.out, before.out));
  EXPECT_TRUE(test::equal(acc.lse, before.lse));
  // B = 0.
  Tensor out0 = Tensor::zeros({0, 3, 2, 4}, DType::f64),
         lse0 = Tensor::zeros({0, 2, 3}, DType::f64);
  EXPECT_NO_THROW(attention_merge_(out0, lse0, out0.clone(), lse0.clone(), AttentionLayout::bshd));
}

TEST(AttentionMerge, Errors) {
  const int64_t B = 2, S = 5, H = 3, Dv = 4;
  const Tensor out = Tensor::zeros({B, S, H, Dv}, DType::f32);
  const Tensor lse = Tensor::zeros({B, H, S}, DType::f32);
  // The message of a merge into copies of (out, lse) with the block (out_b, lse_b).
  auto error = [&](const Tensor& acc_out, const Tensor& acc_lse, const Tensor& out_b,
                   const Tensor& lse_b, AttentionLayout layout = AttentionLayout::bshd,
                   int64_t row_begin = 0) {
    Tensor o = acc_out.defined() ? acc_out.clone() : Tensor();
    Tensor l = acc_lse.defined() ? acc_lse.clone() : Tensor();
    EXPECT_THROW(attention_merge_(o, l, out_b, lse_b, layout, row_begin), moe::Error);
    return test::message_of([&] { attention_merge_(o, l, out_b, lse_b, layout, row_begin); });
  };
  auto has = [](const std::string& message, const std::string& part) {
    return message.find(part) != std::string::npos;
  };
  EXPECT_TRUE(has(error(out, lse, Tensor::zeros({B, S, H + 1, Dv}, DType::f32), lse), "out_b"));
  EXPECT_TRUE(has(error(out, lse, Tensor::zeros({B, S, H, Dv + 1}, DType::f32), lse), "out_b"));
  EXPECT_TRUE(has(error(out, lse, Tensor::zeros({B + 1, S, H, Dv}, DType::f32), lse), "out_b"));
  EXPECT_TRUE(has(error(out, Tensor::zeros({B, H, S + 1}, DType::f32), out, lse), "lse_acc"));
  EXPECT_TRUE(has(error(out, lse, out, Tensor::zeros({B, H, S - 1}, DType::f32)), "lse_b"));
  EXPECT_TRUE(has(error(Tensor::zeros({B, S, H * Dv}, DType::f32), lse, out, lse), "out_acc"));
  EXPECT_TRUE(has(error(out, lse, out.to(DType::bf16), lse), "out_b"));
  EXPECT_TRUE(has(error(out, lse.to(DType::f64), out, lse), "lse_acc"));
  EXPECT_TRUE(has(error(out, lse, out, lse.to(DType::f64)), "lse_b"));
  EXPECT_TRUE(has(error(out.to(DType::f64), lse, out.to(DType::f64), lse), "lse_acc must be f64"));
  EXPECT_TRUE(has(error(Tensor::zeros({B, S, H, Dv}, DType::i32), lse, out, lse), "out_acc"));
  EXPECT_TRUE(has(error(out, lse, Tensor(), lse), "out_b"));
  EXPECT_TRUE(has(error(out, Tensor(), out, lse), "lse_acc"));
  // The block's rows must lie within the accumulator's.
  const Tensor rows3 = Tensor::zeros({B, 3, H, Dv}, DType::f32);
  const Tensor lse3 = Tensor::zeros({B, H, 3}, DType::f32);
  EXPECT_TRUE(has(error(out, lse, rows3, lse3, AttentionLayout::bshd, 3), "row_begin 3"));
  EXPECT_TRUE(has(error(out, lse, rows3, lse3, AttentionLayout::bshd, -1), "row_begin -1"));
  EXPECT_TRUE(has(error(out, lse, out, lse, AttentionLayout::bshd, 1), "row_begin 1"));
  Tensor o = out.clone(), l = lse.clone();
  EXPECT_NO_THROW(attention_merge_(o, l, rows3, lse3, AttentionLayout::bshd, 2));
  const Tensor rows6 = Tensor::zeros({B, S + 1, H, Dv}, DType::f32);
  EXPECT_TRUE(has(error(out, lse, rows6, Tensor::zeros({B, H, S + 1}, DType::f32)),
                  "more than out_acc's Sq"));
  // bshd tensors merged as sbhd: B and S swap, so the lse no longer fits.
  const std::string m = error(out, lse, out, lse, AttentionLayout::sbhd);
  EXPECT_TRUE(has(m, "lse_acc")) << m;
  EXPECT_TRUE(has(m, "sbhd")) << m;
}

}  // namespace
}  // namespace moe::ops
