// Rotary embeddings on the CPU: inverse frequencies (plain; YaRN against the formula written out
// independently here and against the values of tests/ops/yarn_reference.py, which mirrors
// Hugging Face's _compute_yarn_parameters), known answers of the three layouts, position 0,
// rotation by theta then -theta, fp64 finite-difference gradients, position forms, bf16, errors.
#include "moe/ops/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "common/check.h"

namespace moe::ops {
namespace {

constexpr RotaryLayout kLayouts[] = {RotaryLayout::half, RotaryLayout::interleaved,
                                     RotaryLayout::interleaved_to_half};

const char* layout_name(RotaryLayout l) {
  switch (l) {
    case RotaryLayout::half: return "half";
    case RotaryLayout::interleaved: return "interleaved";
    case RotaryLayout::interleaved_to_half: return "interleaved_to_half";
  }
  return "?";
}

Tensor freq_f64(const std::vector<double>& f) {
  return Tensor::from_vector(f, {static_cast<int64_t>(f.size())});
}

// ---- inverse frequencies ------------------------------------------------------------------------

TEST(RopeFrequencies, PlainRope) {
  const RotaryFrequencies f = rope_frequencies(8, 10000.0);
  ASSERT_EQ(f.inv_freq.size(), 4u);
  EXPECT_DOUBLE_EQ(f.inv_freq[0], 1.0);
  EXPECT_DOUBLE_EQ(f.inv_freq[1], 0.1);
  EXPECT_DOUBLE_EQ(f.inv_freq[2], 0.01);
  EXPECT_NEAR(f.inv_freq[3], 0.001, 1e-18);
  EXPECT_EQ(f.attention_scale, 1.0);
  EXPECT_THROW(rope_frequencies(7, 10000.0), moe::Error);
  EXPECT_THROW(rope_frequencies(8, 1.0), moe::Error);
}

TEST(RopeFrequencies, YarnMscale) {
  EXPECT_EQ(yarn_get_mscale(1.0, 0.707), 1.0);
  EXPECT_EQ(yarn_get_mscale(0.5, 2.0), 1.0);
  EXPECT_DOUBLE_EQ(yarn_get_mscale(40.0, 1.0), 0.1 * std::log(40.0) + 1.0);
  YarnScaling y;
  y.factor = 8.0;
  y.original_max_position_embeddings = 2048;
  // Both mscales set: their ratio.
  y.mscale = 1.0;
  y.mscale_all_dim = 0.5;
  EXPECT_DOUBLE_EQ(yarn_frequencies(40, 50000.0, y).attention_scale,
                   (0.1 * std::log(8.0) + 1) / (0.05 * std::log(8.0) + 1));
  // Equal mscales (DeepSeek-V2/V3 configs): 1.
  y.mscale_all_dim = 1.0;
  EXPECT_DOUBLE_EQ(yarn_frequencies(40, 50000.0, y).attention_scale, 1.0);
  // One unset: get_mscale(factor) with mscale 1.
  y.mscale_all_dim = 0.0;
  EXPECT_DOUBLE_EQ(yarn_frequencies(40, 50000.0, y).attention_scale, 0.1 * std::log(8.0) + 1);
  // An explicit attention factor wins.
  y.attention_factor = 0.75;
  EXPECT_EQ(yarn_frequencies(40, 50000.0, y).attention_scale, 0.75);
}

// DeepSeek-V3 (qk_rope_head_dim 64, theta 1e4, factor 40, original 4096, beta 32 / 1), written
// piecewise: the correction range, worked out by hand, is
//   low  = floor(64 ln(4096 / (2 pi 32)) / (2 ln 1e4)) = floor(10.47) = 10
//   high = ceil (64 ln(4096 / (2 pi 1))  / (2 ln 1e4)) = ceil(22.52)  = 23
// below low the original frequency is kept, above high it is divided by the factor, and between
// the two they blend linearly in the index.
TEST(RopeFrequencies, YarnMatchesTheFormulaPiecewise) {
  const double theta = 1e4, factor = 40;
  const int64_t dr = 64;
  const double corr_fast = 64 * std::log(4096 / (2 * std::numbers::pi * 32)) / (2 * std::log(theta));
  const double corr_slow = 64 * std::log(4096 / (2 * std::numbers::pi * 1)) / (2 * std::log(theta));
  ASSERT_EQ(std::floor(corr_fast), 10.0);
  ASSERT_EQ(std::ceil(corr_slow), 23.0);
  YarnScaling y;
  y.factor = factor;
  y.original_max_position_embeddings = 4096;
  y.mscale = 1.0;
  y.mscale_all_dim = 1.0;
  const RotaryFrequencies f = yarn_frequencies(dr, theta, y);
  ASSERT_EQ(f.inv_freq.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    const double original = std::pow(theta, -2.0 * i / dr);
    double expected;
    if (i <= 10) {
      expected = original;
    } else if (i >= 23) {
      expected = original / factor;
    } else {
      const double t = (i - 10) / 13.0;  // share of the interpolated frequency
      expected = (1 - t) * original + t * original / factor;
    }
    EXPECT_NEAR(f.inv_freq[static_cast<size_t>(i)], expected, 1e-15 * original) << "i = " << i;
  }
  EXPECT_EQ(f.attention_scale, 1.0);
}

// Values printed by tests/ops/yarn_reference.py (HF's float32 computation); fp64 here agrees
// to fp32 rounding.
TEST(RopeFrequencies, YarnMatchesHuggingFaceReference) {
  struct Case {
    const char* name;
    int64_t dim;
    double theta;
    YarnScaling yarn;
    double attention_factor;
    std::vector<double> inv_freq;
  };
  YarnScaling v3;
  v3.factor = 40;
  v3.original_max_position_embeddings = 4096;
  v3.mscale = 1;
  v3.mscale_all_dim = 1;
  YarnScaling ratio;
  ratio.factor = 8;
  ratio.original_max_position_embeddings = 2048;
  ratio.beta_fast = 16;
  ratio.beta_slow = 2;
  ratio.mscale = 1;
  ratio.mscale_all_dim = 0.5;
  YarnScaling plain;
  plain.factor = 4;
  plain.original_max_position_embeddings = 1024;
  plain.truncate = false;
  const std::vector<Case> cases = {
      {"deepseek_v3", 64, 10000.0, v3, 1.0,
       {1, 0.749894202, 0.562341332, 0.421696514, 0.316227764, 0.237137392, 0.177827939,
        0.133352146, 0.100000001, 0.0749894157, 0.0562341288, 0.0390069261, 0.0268793609,
        0.0183781441, 0.012447956, 0.0083345091, 0.00550000044, 0.00356199732, 0.00224936521,
        0.00137051346, 0.000790569407, 0.000414990413, 0.00017782794, 3.3338034e-05,
        2.49999994e-05, 1.87473543e-05, 1.40585325e-05, 1.05424142e-05, 7.90569447e-06,
        5.92843435e-06, 4.44569832e-06, 3.33380353e-06}},
      {"mscale_ratio", 40, 50000.0, ratio, 1.094179988101349,
       {1, 0.582172215, 0.338924527, 0.197312459, 0.11486984, 0.0668740273, 0.0321190655,
        0.014732413, 0.00626766216, 0.00230454281, 0.000559017004, 0.000325444125,
        0.000189464539, 0.000110301044, 6.42141968e-05, 3.73837211e-05, 2.17637607e-05,
        1.26702562e-05, 7.37627488e-06, 4.294262e-06}},
      {"no_mscale_untruncated", 32, 10000.0, plain, 1.138629436111989,
       {1, 0.562341332, 0.316227764, 0.174015075, 0.0853986368, 0.0410179645, 0.0191267766,
        0.00854053255, 0.00355697144, 0.00140585331, 0.000790569466, 0.000444569858,
        0.000250000012, 0.000140585325, 7.90569466e-05, 4.44569851e-05}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const RotaryFrequencies f = yarn_frequencies(c.dim, c.theta, c.yarn);
    EXPECT_NEAR(f.attention_scale, c.attention_factor, 1e-12);
    ASSERT_EQ(f.inv_freq.size(), c.inv_freq.size());
    for (size_t i = 0; i < c.inv_freq.size(); ++i)
      EXPECT_NEAR(f.inv_freq[i], c.inv_freq[i], 4e-7 * c.inv_freq[i]) << "i = " << i;
  }
}

// ---- the rotation -------------------------------------------------------------------------------

// x [1 token, 1 head, D = 6], Dr = 4 (2 pass-through features), inv_freq = [1, 0.1], position 3.
TEST(Rotary, KnownAnswers) {
  const std::vector<double> x{1, 2, 3, 4, 5, 6};
  const Tensor xt = Tensor::from_vector(x, {1, 1, 6});
  const Tensor freq = freq_f64({1.0, 0.1});
  const Tensor pos = Tensor::from_vector(std::vector<int64_t>{3}, {1});
  const double m = 1.5;
  const double c0 = m * std::cos(3.0), s0 = m * std::sin(3.0);
  const double c1 = m * std::cos(0.3), s1 = m * std::sin(0.3);
  RotaryArgs args;
  args.attention_scale = m;
  // half: pairs (0, 2) and (1, 3).
  args.layout = RotaryLayout::half;
  std::vector<double> e{x[0] * c0 - x[2] * s0, x[1] * c1 - x[3] * s1, x[2] * c0 + x[0] * s0,
                        x[3] * c1 + x[1] * s1, 5, 6};
  EXPECT_TRUE(test::close_as(rotary_forward(xt, freq, pos, args),
                             Tensor::from_vector(e, {1, 1, 6}), DType::f64, "half"));
  // interleaved: pairs (0, 1) and (2, 3).
  args.layout = RotaryLayout::interleaved;
  e = {x[0] * c0 - x[1] * s0, x[1] * c0 + x[0] * s0, x[2] * c1 - x[3] * s1,
       x[3] * c1 + x[2] * s1, 5, 6};
  EXPECT_TRUE(test::close_as(rotary_forward(xt, freq, pos, args),
                             Tensor::from_vector(e, {1, 1, 6}), DType::f64, "interleaved"));
  // interleaved_to_half: HF DeepSeek: q.view(d/2, 2).transpose -> [x0 x2 | x1 x3], then half.
  args.layout = RotaryLayout::interleaved_to_half;
  const std::vector<double> p{x[0], x[2], x[1], x[3]};
  e = {p[0] * c0 - p[2] * s0, p[1] * c1 - p[3] * s1, p[2] * c0 + p[0] * s0,
       p[3] * c1 + p[1] * s1, 5, 6};
  EXPECT_TRUE(test::close_as(rotary_forward(xt, freq, pos, args),
                             Tensor::from_vector(e, {1, 1, 6}), DType::f64, "interleaved_to_half"));
}

TEST(Rotary, PositionZeroIsIdentity) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor x = test::random_normal({1, 2, 3, 72}, DType::f64, seed);  // [S=1, B, heads, D]
  const Tensor freq = inv_freq_tensor(rope_frequencies(40, 10000.0), DType::f64, Device::cpu());
  for (RotaryLayout layout : {RotaryLayout::half, RotaryLayout::interleaved}) {
    SCOPED_TRACE(layout_name(layout));
    RotaryArgs args;
    args.layout = layout;
    EXPECT_TRUE(test::equal(rotary_forward(x, freq, Tensor(), args), x));
  }
  // interleaved_to_half at position 0 is the even/odd de-interleave of the rotary part.
  RotaryArgs args;
  args.layout = RotaryLayout::interleaved_to_half;
  const std::vector<double> in = x.to_vector<double>();
  std::vector<double> expected = in;
  for (size_t row = 0; row < 6; ++row)
    for (size_t i = 0; i < 20; ++i) {
      expected[row * 72 + i] = in[row * 72 + 2 * i];
      expected[row * 72 + 20 + i] = in[row * 72 + 2 * i + 1];
    }
  EXPECT_TRUE(test::equal(rotary_forward(x, freq, Tensor(), args),
                          Tensor::from_vector(expected, x.shape())));
}

TEST(Rotary, RotatingByThetaThenMinusThetaIsIdentity) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor x = test::random_normal({5, 2, 3, 12}, DType::f64, seed);
  const Tensor freq = inv_freq_tensor(rope_frequencies(8, 500.0), DType::f64, Device::cpu());
  for (RotaryLayout layout : kLayouts) {
    SCOPED_TRACE(layout_name(layout));
    RotaryArgs args;
    args.layout = layout;
    args.position_offset = 1000;
    const Tensor y = rotary_forward(x, freq, Tensor(), args);
    EXPECT_GT(test::relative_error(y, x), 0.1);  // it did rotate
    EXPECT_TRUE(test::close_as(rotary_backward(y, freq, Tensor(), args), x, DType::f64));
    // With an attention scale m the round trip scales the rotary part by m^2 only.
    args.attention_scale = 0.5;
    const Tensor back = rotary_backward(rotary_forward(x, freq, Tensor(), args), freq, Tensor(), args);
    std::vector<double> expected = x.to_vector<double>();
    for (size_t k = 0; k < expected.size(); ++k)
      if (k % 12 < 8) expected[k] *= 0.25;
    EXPECT_TRUE(test::close_as(back, Tensor::from_vector(expected, x.shape()), DType::f64));
  }
}

TEST(Rotary, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor freq = inv_freq_tensor(rope_frequencies(6, 10000.0), DType::f64, Device::cpu());
  const Tensor positions = Tensor::from_vector(std::vector<int32_t>{7, 0, 123, 4}, {4});
  for (RotaryLayout layout : kLayouts) {
    for (bool with_positions : {false, true}) {
      SCOPED_TRACE(testing::Message() << layout_name(layout)
                                      << (with_positions ? " positions" : " default positions"));
      RotaryArgs args;
      args.layout = layout;
      args.attention_scale = 1.3;
      args.position_offset = 5;
      // [T=4, heads=2, D=10] with given positions, or [S=4, B=1, heads=2, D=10] by index.
      const Shape shape = with_positions ? Shape{4, 2, 10} : Shape{4, 1, 2, 10};
      const Tensor pos = with_positions ? positions : Tensor();
      Tensor x = test::random_normal(shape, DType::f64, seed);
      const Tensor probe = test::random_normal(shape, DType::f64, seed + 1);
      auto loss = [&] { return test::dot(rotary_forward(x, freq, pos, args), probe); };
      const Tensor dx = rotary_backward(probe, freq, pos, args);
      EXPECT_TRUE(test::close(dx, test::numerical_gradient(loss, x), test::kGradCheckTol, "dx"));
    }
  }
}

TEST(Rotary, PositionForms) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t s = 5, b = 3, heads = 2, d = 8;
  const Tensor x = test::random_normal({s, b, heads, d}, DType::f32, seed);
  const Tensor freq = inv_freq_tensor(rope_frequencies(8, 10000.0), DType::f32, Device::cpu());
  RotaryArgs args;
  args.position_offset = 11;
  const Tensor by_index = rotary_forward(x, freq, Tensor(), args);
  // [S] positions shared by the batch.
  std::vector<int64_t> seq_pos(static_cast<size_t>(s));
  for (int64_t i = 0; i < s; ++i) seq_pos[static_cast<size_t>(i)] = i;
  EXPECT_TRUE(test::equal(rotary_forward(x, freq, Tensor::from_vector(seq_pos, {s}), args),
                          by_index));
  // [S, B] positions, and the [T, heads, D] view with [T] positions; offset folded in.
  std::vector<int32_t> token_pos(static_cast<size_t>(s * b));
  for (int64_t i = 0; i < s * b; ++i) token_pos[static_cast<size_t>(i)] = static_cast<int32_t>(i / b + 11);
  RotaryArgs no_offset;
  EXPECT_TRUE(test::equal(
      rotary_forward(x, freq, Tensor::from_vector(token_pos, {s, b}), no_offset), by_index));
  EXPECT_TRUE(test::equal(rotary_forward(x.reshape({s * b, heads, d}), freq,
                                         Tensor::from_vector(token_pos, {s * b}), no_offset),
                          by_index.reshape({s * b, heads, d})));
}

TEST(Rotary, Bf16ComputesInFp32) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor x = test::random_normal({17, 3, 72}, DType::bf16, seed);
  const Tensor pos = test::random_uniform({17}, DType::f32, seed + 1, 0, 4000).to(DType::f64);
  std::vector<int64_t> p;
  for (double v : pos.to_vector<double>()) p.push_back(static_cast<int64_t>(v));
  const Tensor positions = Tensor::from_vector(p, {17});
  const Tensor freq = inv_freq_tensor(rope_frequencies(40, 10000.0), DType::f32, Device::cpu());
  for (RotaryLayout layout : kLayouts) {
    SCOPED_TRACE(layout_name(layout));
    RotaryArgs args;
    args.layout = layout;
    const Tensor y = rotary_forward(x, freq, positions, args);
    EXPECT_EQ(y.dtype(), DType::bf16);
    EXPECT_TRUE(test::equal(y, rotary_forward(x.to(DType::f32), freq, positions, args).to(DType::bf16)));
    EXPECT_TRUE(test::equal(rotary_backward(x, freq, positions, args),
                            rotary_backward(x.to(DType::f32), freq, positions, args).to(DType::bf16)));
  }
}

TEST(Rotary, EmptyAndBadInput) {
  const Tensor freq = inv_freq_tensor(rope_frequencies(4, 10000.0), DType::f32, Device::cpu());
  EXPECT_EQ(rotary_forward(Tensor::empty({0, 2, 8}, DType::f32), freq,
                           Tensor::empty({0}, DType::i64), {})
                .shape(),
            (Shape{0, 2, 8}));
  EXPECT_EQ(rotary_backward(Tensor::empty({0, 1, 2, 8}, DType::bf16), freq, Tensor(), {}).shape(),
            (Shape{0, 1, 2, 8}));
  const Tensor x = Tensor::zeros({3, 2, 8}, DType::f32);
  EXPECT_THROW(rotary_forward(Tensor::zeros({3, 8}, DType::f32), freq, Tensor(), {}), moe::Error);
  EXPECT_THROW(rotary_forward(Tensor::zeros({3, 2, 2}, DType::f32), freq, Tensor(), {}),
               moe::Error);  // Dr = 4 > D = 2
  EXPECT_THROW(rotary_forward(x.to(DType::i32), freq, Tensor(), {}), moe::Error);
  EXPECT_THROW(rotary_forward(x, freq.to(DType::bf16), Tensor(), {}), moe::Error);
  EXPECT_THROW(rotary_forward(x, freq, Tensor::zeros({2}, DType::i64), {}), moe::Error);
  EXPECT_THROW(rotary_forward(x, freq, Tensor::zeros({3}, DType::f32), {}), moe::Error);
  EXPECT_THROW(inv_freq_tensor(rope_frequencies(4, 10.0), DType::bf16, Device::cpu()), moe::Error);
}

}  // namespace
}  // namespace moe::ops
