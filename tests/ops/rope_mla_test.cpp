// The rotary pieces multi-latent attention needs, on the CPU: rotary_forward with a feature
// offset (rotating the last dr features of each [nope | rope] query head) against the plain op
// on the extracted block, and its backward as the transpose; mla_expand_kv forward as a known
// answer written out here, its backward as the transpose (fp64 dot-product identity) and a
// finite-difference check; bf16; empty inputs; errors.
#include "moe/ops/rope_mla.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/check.h"
#include "moe/ops/rope.h"

namespace moe::ops {
namespace {

constexpr RotaryLayout kLayouts[] = {RotaryLayout::half, RotaryLayout::interleaved,
                                     RotaryLayout::interleaved_to_half};

Tensor inv_freq(int64_t rotary_dim) {
  return inv_freq_tensor(rope_frequencies(rotary_dim, 10000.0), DType::f64, Device::cpu());
}

// x [S, B, heads, D]: the features [o, o + Dr) of each head as their own [S, B, heads, Dr].
std::vector<double> block(const std::vector<double>& x, int64_t rows, int64_t D, int64_t o,
                          int64_t Dr) {
  std::vector<double> out;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = o; j < o + Dr; ++j) out.push_back(x[r * D + j]);
  return out;
}

TEST(RotaryFeatureOffset, RotatesOnlyTheOffsetBlock) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t S = 5, B = 2, heads = 3, dn = 3, dr = 4, D = dn + dr + 2;  // features after too
  for (RotaryLayout layout : kLayouts) {
    SCOPED_TRACE(static_cast<int>(layout));
    RotaryArgs args;
    args.layout = layout;
    args.attention_scale = 1.3;
    args.feature_offset = dn;
    const Tensor x = test::random_normal({S, B, heads, D}, DType::f64, seed);
    const Tensor y = rotary_forward(x, inv_freq(dr), Tensor(), args);
    const std::vector<double> xv = x.to_double_vector(), yv = y.to_double_vector();
    const int64_t rows = S * B * heads;
    // Pass-through features are copied exactly.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < D; ++j)
        if (j < dn || j >= dn + dr) {
          EXPECT_EQ(yv[r * D + j], xv[r * D + j]) << r << "," << j;
        }
    // The block is what the plain op (offset 0) makes of it alone.
    RotaryArgs plain = args;
    plain.feature_offset = 0;
    const Tensor xb = Tensor::from_vector(block(xv, rows, D, dn, dr), {S, B, heads, dr});
    const Tensor expected = rotary_forward(xb, inv_freq(dr), Tensor(), plain);
    EXPECT_TRUE(test::close(Tensor::from_vector(block(yv, rows, D, dn, dr), {S, B, heads, dr}),
                            expected, 1e-15, "rotated block"));
    // Backward is the transpose: <R x, dy> == <x, R^T dy>.
    const Tensor dy = test::random_normal(x.shape(), DType::f64, seed + 1);
    const Tensor dx = rotary_backward(dy, inv_freq(dr), Tensor(), args);
    EXPECT_NEAR(test::dot(y, dy), test::dot(x, dx), 1e-12);
  }
}

TEST(RotaryFeatureOffset, Errors) {
  const Tensor x = Tensor::zeros({2, 1, 2, 6}, DType::f32);
  const Tensor f = inv_freq_tensor(rope_frequencies(4, 10000.0), DType::f32, Device::cpu());
  RotaryArgs args;
  args.feature_offset = 3;  // 3 + 4 > 6
  EXPECT_THROW(rotary_forward(x, f, Tensor(), args), Error);
  EXPECT_THROW(rotary_backward(x, f, Tensor(), args), Error);
  args.feature_offset = -1;
  EXPECT_THROW(rotary_forward(x, f, Tensor(), args), Error);
  args.feature_offset = 2;  // fits exactly
  EXPECT_EQ(rotary_forward(x, f, Tensor(), args).shape(), x.shape());
}

// ---- mla_expand_kv -----------------------------------------------------------------------------

TEST(MlaExpandKv, ForwardKnownAnswer) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t S = 3, B = 2, heads = 4, dn = 3, dr = 2, dv = 5;
  const Tensor kv = test::random_normal({S, B, heads, dn + dv}, DType::f64, seed);
  const Tensor pe = test::random_normal({S, B, dr}, DType::f64, seed + 1);
  const MlaKeyValue out = mla_expand_kv_forward(kv, pe, dn);
  ASSERT_EQ(out.k.shape(), (Shape{S, B, heads, dn + dr}));
  ASSERT_EQ(out.v.shape(), (Shape{S, B, heads, dv}));
  const std::vector<double> kvv = kv.to_double_vector(), pev = pe.to_double_vector();
  const std::vector<double> k = out.k.to_double_vector(), v = out.v.to_double_vector();
  for (int64_t t = 0; t < S * B; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t j = 0; j < dn; ++j)
        EXPECT_EQ(k[(t * heads + h) * (dn + dr) + j], kvv[(t * heads + h) * (dn + dv) + j]);
      for (int64_t j = 0; j < dr; ++j)
        EXPECT_EQ(k[(t * heads + h) * (dn + dr) + dn + j], pev[t * dr + j]);
      for (int64_t j = 0; j < dv; ++j)
        EXPECT_EQ(v[(t * heads + h) * dv + j], kvv[(t * heads + h) * (dn + dv) + dn + j]);
    }
}

TEST(MlaExpandKv, BackwardIsTheTranspose) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t S = 4, B = 3, heads = 5, dn = 2, dr = 4, dv = 3;
  Tensor kv = test::random_normal({S, B, heads, dn + dv}, DType::f64, seed);
  Tensor pe = test::random_normal({S, B, dr}, DType::f64, seed + 1);
  const Tensor wk = test::random_normal({S, B, heads, dn + dr}, DType::f64, seed + 2);
  const Tensor wv = test::random_normal({S, B, heads, dv}, DType::f64, seed + 3);
  const MlaKeyValueGrads g = mla_expand_kv_backward(wk, wv, dn);
  auto objective = [&] {
    const MlaKeyValue out = mla_expand_kv_forward(kv, pe, dn);
    return test::dot(out.k, wk) + test::dot(out.v, wv);
  };
  EXPECT_TRUE(
      test::close(g.kv, test::numerical_gradient(objective, kv), test::kGradCheckTol, "kv"));
  EXPECT_TRUE(
      test::close(g.k_pe, test::numerical_gradient(objective, pe), test::kGradCheckTol, "k_pe"));
}

// bf16: copies are exact, the head sum is computed in fp32 and rounded once.
TEST(MlaExpandKv, Bf16MatchesF32) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t T = 7, heads = 16, dn = 8, dr = 4, dv = 8;
  const Tensor kv = test::random_normal({T, heads, dn + dv}, DType::bf16, seed);
  const Tensor pe = test::random_normal({T, dr}, DType::bf16, seed + 1);
  const MlaKeyValue a = mla_expand_kv_forward(kv, pe, dn);
  const MlaKeyValue b = mla_expand_kv_forward(kv.to(DType::f32), pe.to(DType::f32), dn);
  EXPECT_TRUE(test::equal(a.k.to(DType::f32), b.k));
  EXPECT_TRUE(test::equal(a.v.to(DType::f32), b.v));
  const MlaKeyValueGrads ga = mla_expand_kv_backward(a.k, a.v, dn);
  const MlaKeyValueGrads gb = mla_expand_kv_backward(b.k, b.v, dn);
  EXPECT_TRUE(test::equal(ga.kv.to(DType::f32), gb.kv));
  EXPECT_TRUE(test::close_as(ga.k_pe.to(DType::f32), gb.k_pe, DType::bf16));
}

TEST(MlaExpandKv, EmptyInputs) {
  const MlaKeyValue out = mla_expand_kv_forward(Tensor::zeros({0, 2, 3, 5}, DType::f32),
                                                Tensor::zeros({0, 2, 4}, DType::f32), 2);
  EXPECT_EQ(out.k.shape(), (Shape{0, 2, 3, 6}));
  EXPECT_EQ(out.v.shape(), (Shape{0, 2, 3, 3}));
  const MlaKeyValueGrads g = mla_expand_kv_backward(out.k, out.v, 2);
  EXPECT_EQ(g.kv.shape(), (Shape{0, 2, 3, 5}));
  EXPECT_EQ(g.k_pe.shape(), (Shape{0, 2, 4}));
}

TEST(MlaExpandKv, Errors) {
  const Tensor kv = Tensor::zeros({2, 1, 3, 5}, DType::f32);
  const Tensor pe = Tensor::zeros({2, 1, 4}, DType::f32);
  EXPECT_NO_THROW(mla_expand_kv_forward(kv, pe, 2));
  EXPECT_THROW(mla_expand_kv_forward(kv, pe, 5), Error);  // no value features left
  EXPECT_THROW(mla_expand_kv_forward(kv, pe, -1), Error);
  EXPECT_THROW(mla_expand_kv_forward(kv, Tensor::zeros({2, 2, 4}, DType::f32), 2), Error);
  EXPECT_THROW(mla_expand_kv_forward(kv, pe.to(DType::f64), 2), Error);
  EXPECT_THROW(mla_expand_kv_forward(Tensor::zeros({6, 5}, DType::f32), pe, 2), Error);
  EXPECT_THROW(mla_expand_kv_forward(Tensor::zeros({2, 1, 3, 5}, DType::i32), pe, 2), Error);
  const Tensor dk = Tensor::zeros({2, 1, 3, 6}, DType::f32);
  const Tensor dv = Tensor::zeros({2, 1, 3, 3}, DType::f32);
  EXPECT_NO_THROW(mla_expand_kv_backward(dk, dv, 2));
  EXPECT_THROW(mla_expand_kv_backward(dk, Tensor::zeros({2, 1, 2, 3}, DType::f32), 2), Error);
  EXPECT_THROW(mla_expand_kv_backward(dk, dv.to(DType::f64), 2), Error);
  EXPECT_THROW(mla_expand_kv_backward(dk, dv, 6), Error);
}

}  // namespace
}  // namespace moe::ops
