// Dropout (ops/dropout.h) on the CPU: the documented mask formula, p = 0 as the identity, p = 1
// as zeros, the keep rate, the scale, the backward as the Jacobian transpose, masks that do not
// depend on how a batch is split into micro-batches or ranks, and blocks of a sequence (sequence
// parallelism) that draw the whole sequence's masks.
#include "moe/ops/dropout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/check.h"
#include "ops/dropout_testing.h"

namespace moe::ops {
namespace {

DropoutArgs args_of(double p, uint64_t seed, int64_t first_sample = 0, int64_t layer = 0,
                    DropoutSite site = DropoutSite::mlp_output) {
  DropoutArgs a;
  a.p = p;
  a.key = dropout_key(seed, layer, site);
  a.first_sample = first_sample;
  return a;
}

// Element (s, b, f) is kept iff philox4x32_10(key, n >> 2).v[n & 3] maps to u >= p, with
// n = ((first_sample + b) S + s) F + f: the formula in dropout.h, written out again here.
TEST(Dropout, MaskFollowsTheDocumentedFormula) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t S = 5, B = 3, F = 7, first = 11;
  const DropoutArgs a = args_of(0.3, seed, first, 2, DropoutSite::attention_output);
  const Philox4 k = philox4x32_10(seed, (uint64_t(3) << 8) | 2);
  EXPECT_EQ(a.key, (uint64_t(k.v[1]) << 32) | k.v[0]);
  const std::vector<uint8_t> mask = dropout_mask({S, B, F}, a, Device::cpu()).to_vector<uint8_t>();
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t f = 0; f < F; ++f) {
        const uint64_t n = uint64_t(((first + b) * S + s) * F + f);
        const uint32_t bits = philox4x32_10(a.key, n >> 2).v[n & 3];
        const bool keep = (float(bits >> 8) + 0.5f) * 5.9604644775390625e-08f >= 0.3f;
        EXPECT_EQ(mask[size_t((s * B + b) * F + f)], keep ? 1 : 0) << s << " " << b << " " << f;
      }
}

TEST(Dropout, ZeroProbabilityIsTheIdentityWithoutWork) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Tensor x = test::random_normal({4, 3, 9}, DType::f32, seed);
  const Tensor before = x.clone();
  DropoutArgs a = args_of(0.0, seed);
  const Tensor y = dropout(x, a);
  EXPECT_EQ(y.raw(), x.raw());  // the same storage: nothing was computed
  dropout_(x, a);
  EXPECT_TRUE(test::equal(x, before));
  // p = 0 does not even look at its input (the layers call it on every tensor shape).
  const Tensor flat = test::random_normal({12}, DType::f32, seed);
  EXPECT_EQ(dropout(flat, a).raw(), flat.raw());
}

TEST(Dropout, KeptValuesAreScaledAndDroppedAreZero) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = test::random_normal({6, 5, 33}, dt, seed);
    const DropoutArgs a = args_of(0.25, seed + 1, 7);
    const Tensor y = dropout(x, a);
    const std::vector<double> xv = x.to_double_vector(), yv = y.to_double_vector();
    const std::vector<uint8_t> m = dropout_mask(x.shape(), a, Device::cpu()).to_vector<uint8_t>();
    const double scale = 1.0 / 0.75;
    for (size_t i = 0; i < xv.size(); ++i) {
      if (m[i] == 0) {
        EXPECT_EQ(yv[i], 0.0) << i;
      } else {
        // Rounded once to the dtype from the f32 (f64) product.
        EXPECT_NEAR(yv[i], xv[i] * scale, std::abs(xv[i]) * test::tolerance(dt) + 1e-300) << i;
      }
    }
    Tensor z = x.clone();
    dropout_(z, a);
    EXPECT_TRUE(test::equal(z, y));
  }
}

TEST(Dropout, KeepRateMatchesOneMinusP) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Shape shape{64, 8, 257};
  const double n = 64.0 * 8 * 257;
  for (double p : {0.1, 0.5, 0.9}) {
    SCOPED_TRACE(p);
    const std::vector<uint8_t> m =
        dropout_mask(shape, args_of(p, seed, 3), Device::cpu()).to_vector<uint8_t>();
    double kept = 0;
    for (uint8_t v : m) kept += v;
    // Binomial(n, 1 - p): 6 standard deviations.
    EXPECT_NEAR(kept / n, 1.0 - p, 6.0 * std::sqrt(p * (1 - p) / n));
  }
}

TEST(Dropout, ProbabilityOneGivesZerosAndBadProbabilitiesAreRefused) {
  const Tensor x = test::random_normal({3, 2, 5}, DType::f32, 4);
  const Tensor y = dropout(x, args_of(1.0, 9));
  for (double v : y.to_double_vector()) EXPECT_EQ(v, 0.0);
  for (double p : {-0.1, 1.5, std::nan("")}) {
    EXPECT_THROW(dropout(x, args_of(p, 9)), Error) << p;
    EXPECT_THROW(check_dropout_probability(p, "--hidden-dropout"), Error) << p;
  }
  try {
    check_dropout_probability(2.0, "--hidden-dropout");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--hidden-dropout"), std::string::npos) << e.what();
  }
  DropoutArgs negative = args_of(0.5, 9, -1);
  EXPECT_THROW(dropout(x, negative), Error);
  EXPECT_THROW(dropout(test::random_normal({6, 5}, DType::f32, 4), args_of(0.5, 9)), Error);
}

// The mask of a batch is the masks of its parts (a micro-batch or a data-parallel rank holding
// samples [first, first + B')): sample b's mask depends on first_sample + b only.
TEST(Dropout, MaskDoesNotDependOnTheBatchSplit) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t S = 7, F = 13;
  const Tensor x = test::random_normal({S, 4, F}, DType::f32, seed);
  const Tensor whole = dropout(x, args_of(0.4, seed, 20));
  for (int64_t b = 0; b < 4; ++b) {
    // Sample b alone, as the micro-batch [S, 1, F] whose first sample is 20 + b.
    std::vector<float> xs, ys;
    const std::vector<float> xv = x.to_vector<float>(), wv = whole.to_vector<float>();
    for (int64_t s = 0; s < S; ++s)
      for (int64_t f = 0; f < F; ++f) {
        xs.push_back(xv[size_t((s * 4 + b) * F + f)]);
        ys.push_back(wv[size_t((s * 4 + b) * F + f)]);
      }
    const Tensor part = dropout(Tensor::from_vector(xs, {S, 1, F}), args_of(0.4, seed, 20 + b));
    EXPECT_TRUE(test::equal(part, Tensor::from_vector(ys, {S, 1, F}))) << b;
  }
  // Another key, site or first sample draws another mask.
  const Shape shape{S, 4, F};
  const Tensor m = dropout_mask(shape, args_of(0.4, seed, 20), Device::cpu());
  EXPECT_FALSE(test::equal(dropout_mask(shape, args_of(0.4, seed, 24), Device::cpu()), m));
  EXPECT_FALSE(test::equal(
      dropout_mask(shape, args_of(0.4, seed, 20, 0, DropoutSite::attention_output), Device::cpu()),
      m));
  EXPECT_FALSE(test::equal(dropout_mask(shape, args_of(0.4, seed, 20, 1), Device::cpu()), m));
}

// A block of positions [seq_offset, seq_offset + S) of a sequence of seq_total: n = ((first_sample
// + b) S_total + seq_offset + s) F + f, written out again.
TEST(Dropout, MaskOfASequenceBlockFollowsTheDocumentedFormula) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t S = 4, B = 3, F = 9, first = 5, offset = 6, total = 11;
  DropoutArgs a = args_of(0.45, seed, first);
  a.seq_offset = offset;
  a.seq_total = total;
  const std::vector<uint8_t> mask = dropout_mask({S, B, F}, a, Device::cpu()).to_vector<uint8_t>();
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t f = 0; f < F; ++f) {
        const uint64_t n = uint64_t(((first + b) * total + offset + s) * F + f);
        EXPECT_EQ(mask[size_t((s * B + b) * F + f)], dropout_keep(a.key, n, 0.45f) ? 1 : 0)
            << s << " " << b << " " << f;
      }
}

// Sequence parallelism: a rank holds positions [offset, offset + S_r) of every sample; the
// dropouts of the blocks, given seq_offset / seq_total, concatenated along S are the dropout of
// the whole [S, B, F] tensor bit for bit. A block drawn at another offset (or as a whole
// sequence of its own) gets another mask.
TEST(Dropout, SequenceBlocksConcatenateToTheWholeSequence) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t S = 7, B = 3, F = 13;
  const Tensor x = test::random_normal({S, B, F}, DType::f32, seed);
  const DropoutArgs whole_args = args_of(0.4, seed + 1, 17);
  const Tensor whole = dropout(x, whole_args);
  const Tensor whole_mask = dropout_mask(x.shape(), whole_args, Device::cpu());
  for (const std::vector<int64_t>& sizes :
       {std::vector<int64_t>{3, 4}, std::vector<int64_t>{1, 5, 1}, std::vector<int64_t>{7}}) {
    SCOPED_TRACE(testing::Message() << sizes.size() << " blocks");
    std::vector<Tensor> outs, in_place, masks, grads;
    int64_t offset = 0;
    for (int64_t size : sizes) {
      DropoutArgs a = whole_args;
      a.seq_offset = offset;
      a.seq_total = S;
      const Tensor block = x.rows(offset, size).clone();
      outs.push_back(dropout(block, a));
      Tensor y = block.clone();
      dropout_(y, a);
      in_place.push_back(y);
      masks.push_back(dropout_mask(block.shape(), a, Device::cpu()));
      grads.push_back(dropout_backward(block, a));
      offset += size;
    }
    EXPECT_TRUE(test::equal(test::concat_dim(outs, 0), whole, "dropout"));
    EXPECT_TRUE(test::equal(test::concat_dim(in_place, 0), whole, "dropout_"));
    EXPECT_TRUE(test::equal(test::concat_dim(masks, 0), whole_mask, "mask"));
    EXPECT_TRUE(test::equal(test::concat_dim(grads, 0), whole, "backward"));
  }
  // The second block of 3 + 4 at the wrong offset, or as a sequence of its own: other masks.
  const Tensor second = x.rows(3, 4).clone();
  const Tensor expected = whole.rows(3, 4).clone();
  DropoutArgs shifted = whole_args;
  shifted.seq_offset = 2;
  shifted.seq_total = S;
  EXPECT_FALSE(test::equal(dropout(second, shifted), expected));
  DropoutArgs alone = whole_args;
  EXPECT_FALSE(test::equal(dropout(second, alone), expected));
  DropoutArgs longer = whole_args;  // the right offset in a longer sequence
  longer.seq_offset = 3;
  longer.seq_total = S + 1;
  EXPECT_FALSE(test::equal(dropout(second, longer), expected));
}

TEST(Dropout, BadSequenceBlocksAreRefusedNamingTheField) {
  const Tensor x = test::random_normal({4, 2, 5}, DType::f32, 4);
  // dropout, dropout_ and dropout_mask all refuse `a`, naming each of `fields`.
  auto expect_refused = [&](const DropoutArgs& a, const std::vector<std::string>& fields) {
    Tensor y = x.clone();
    for (const std::string& m :
         {test::message_of([&] { (void)dropout(x, a); }), test::message_of([&] { dropout_(y, a); }),
          test::message_of([&] { (void)dropout_mask(x.shape(), a, Device::cpu()); })}) {
      EXPECT_NE(m, "");
      for (const std::string& f : fields) EXPECT_NE(m.find(f), std::string::npos) << m;
    }
  };
  DropoutArgs a = args_of(0.5, 9);
  a.seq_offset = -1;
  expect_refused(a, {"seq_offset"});
  a = args_of(0.5, 9);
  a.seq_total = -3;
  expect_refused(a, {"seq_total"});
  a.seq_offset = 3;  // 3 + 4 > 6
  a.seq_total = 6;
  expect_refused(a, {"seq_offset 3", "seq_total 6"});
  a.seq_total = 0;  // an offset without a total: the tensor is the whole sequence
  a.seq_offset = 1;
  expect_refused(a, {"seq_offset 1", "seq_total 4"});
  // The attention fields have no meaning for a token tensor.
  a = args_of(0.5, 9);
  a.head_offset = 1;
  expect_refused(a, {"head_offset"});
  a = args_of(0.5, 9);
  a.key_offset = 2;
  expect_refused(a, {"key_offset"});
  // The last block exactly fits; p = 0 looks at nothing.
  DropoutArgs fits = args_of(0.5, 9);
  fits.seq_offset = 2;
  fits.seq_total = 6;
  EXPECT_NO_THROW(dropout(x, fits));
  DropoutArgs off = fits;
  off.p = 0.0;
  off.seq_offset = 100;
  EXPECT_NO_THROW(dropout(x, off));
}

// The backward (the same map on dy) is the transpose of the forward's Jacobian: finite
// differences of L = <dropout(x), w> with the fixed mask.
TEST(Dropout, BackwardMatchesFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Tensor x = test::random_normal({5, 3, 11}, DType::f64, seed);
  const Tensor w = test::random_normal(x.shape(), DType::f64, seed + 1);
  const DropoutArgs a = args_of(0.3, seed + 2, 5);
  const Tensor analytic = dropout_backward(w, a);
  const Tensor numeric = test::numerical_gradient([&] { return test::dot(dropout(x, a), w); }, x);
  EXPECT_TRUE(test::close(analytic, numeric, test::kGradCheckTol, "dx"));
}

}  // namespace
}  // namespace moe::ops
