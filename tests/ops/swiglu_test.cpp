// SwiGLU with probs and the sigmoid gate on the CPU: known answers from the formulas, fp64
// finite-difference gradients (with and without probs), bf16 computed in fp32, errors.
#include "moe/ops/swiglu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"

namespace moe::ops {
namespace {

double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

TEST(Swiglu, KnownAnswer) {
  // Two rows, F = 2: [gate0 gate1 | up0 up1].
  const std::vector<double> v{0.5, -1.0, 2.0, 3.0, 1.5, 0.0, -2.0, 0.25};
  const Tensor fc1 = Tensor::from_vector(v, {2, 4});
  const Tensor probs = Tensor::from_vector(std::vector<double>{0.7, 0.2}, {2});
  std::vector<double> expected(4);
  const double p[2] = {0.7, 0.2};
  for (int r = 0; r < 2; ++r)
    for (int f = 0; f < 2; ++f) {
      const double g = v[r * 4 + f], u = v[r * 4 + 2 + f];
      expected[r * 2 + f] = g * sigmoid(g) * u * p[r];
    }
  EXPECT_TRUE(test::close_as(swiglu_forward(fc1, probs), Tensor::from_vector(expected, {2, 2}),
                             DType::f64));
  // Undefined probs means p = 1.
  for (int r = 0; r < 2; ++r)
    for (int f = 0; f < 2; ++f) expected[r * 2 + f] /= p[r];
  EXPECT_TRUE(test::close_as(swiglu_forward(fc1, Tensor()), Tensor::from_vector(expected, {2, 2}),
                             DType::f64));
}

TEST(Swiglu, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t rows = 5, ffn = 3;
  for (bool with_probs : {true, false}) {
    SCOPED_TRACE(with_probs ? "with probs" : "without probs");
    Tensor fc1 = test::random_normal({rows, 2 * ffn}, DType::f64, seed, Device::cpu(), 2.0);
    Tensor probs =
        with_probs ? test::random_uniform({rows}, DType::f64, seed + 1, 0.1, 1.0) : Tensor();
    const Tensor w = test::random_normal({rows, ffn}, DType::f64, seed + 2);
    auto loss = [&] { return test::dot(swiglu_forward(fc1, probs), w); };
    const SwigluGrads g = swiglu_backward(w, fc1, probs);
    EXPECT_TRUE(
        test::close(g.fc1_out, test::numerical_gradient(loss, fc1), test::kGradCheckTol, "d_fc1"));
    if (with_probs) {
      EXPECT_TRUE(test::close(g.probs, test::numerical_gradient(loss, probs), test::kGradCheckTol,
                              "d_probs"));
    } else {
      EXPECT_FALSE(g.probs.defined());
    }
  }
}

TEST(Swiglu, Bf16ComputesInFp32) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t rows = 33, ffn = 24;
  const Tensor fc1 = test::random_normal({rows, 2 * ffn}, DType::bf16, seed);
  const Tensor dh = test::random_normal({rows, ffn}, DType::bf16, seed + 1);
  const Tensor probs = test::random_uniform({rows}, DType::f32, seed + 2, 0.0, 1.0);
  const Tensor ref = swiglu_forward(fc1.to(DType::f32), probs);
  const Tensor h = swiglu_forward(fc1, probs);
  EXPECT_EQ(h.dtype(), DType::bf16);
  EXPECT_TRUE(test::equal(h, ref.to(DType::bf16))) << "one rounding of the fp32 value";
  const SwigluGrads g = swiglu_backward(dh, fc1, probs);
  const SwigluGrads g_ref = swiglu_backward(dh.to(DType::f32), fc1.to(DType::f32), probs);
  EXPECT_TRUE(test::equal(g.fc1_out, g_ref.fc1_out.to(DType::bf16)));
  EXPECT_TRUE(test::equal(g.probs, g_ref.probs));
}

TEST(Swiglu, UnitProbsEqualNoProbs) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor fc1 = test::random_normal({9, 14}, DType::f32, seed);
  const Tensor dh = test::random_normal({9, 7}, DType::f32, seed + 1);
  const Tensor ones = Tensor::full({9}, 1.0, DType::f32);
  EXPECT_TRUE(test::equal(swiglu_forward(fc1, ones), swiglu_forward(fc1, Tensor())));
  EXPECT_TRUE(test::equal(swiglu_backward(dh, fc1, ones).fc1_out,
                          swiglu_backward(dh, fc1, Tensor()).fc1_out));
}

TEST(Swiglu, EmptyRows) {
  const Tensor fc1 = Tensor::empty({0, 8}, DType::f32);
  EXPECT_EQ(swiglu_forward(fc1, Tensor::empty({0}, DType::f32)).shape(), (Shape{0, 4}));
  const SwigluGrads g =
      swiglu_backward(Tensor::empty({0, 4}, DType::f32), fc1, Tensor::empty({0}, DType::f32));
  EXPECT_EQ(g.fc1_out.shape(), (Shape{0, 8}));
  EXPECT_EQ(g.probs.shape(), (Shape{0}));
}

TEST(Swiglu, RejectsBadInput) {
  const Tensor fc1 = Tensor::zeros({4, 6}, DType::f32);
  EXPECT_THROW(swiglu_forward(Tensor::zeros({4, 5}, DType::f32), Tensor()), moe::Error);
  EXPECT_THROW(swiglu_forward(Tensor::zeros({24}, DType::f32), Tensor()), moe::Error);
  EXPECT_THROW(swiglu_forward(Tensor::zeros({4, 6}, DType::i32), Tensor()), moe::Error);
  EXPECT_THROW(swiglu_forward(fc1, Tensor::zeros({3}, DType::f32)), moe::Error);
  EXPECT_THROW(swiglu_forward(fc1, Tensor::zeros({4}, DType::bf16)), moe::Error);
  EXPECT_THROW(swiglu_backward(Tensor::zeros({4, 6}, DType::f32), fc1, Tensor()), moe::Error);
  EXPECT_THROW(swiglu_backward(Tensor::zeros({4, 3}, DType::bf16), fc1, Tensor()), moe::Error);
}

// ---- sigmoid gate ---------------------------------------------------------------------------

TEST(SigmoidGate, KnownAnswer) {
  const Tensor out =
      Tensor::from_vector(std::vector<double>{1.0, -2.0, 3.0, 0.5, 4.0, -1.0}, {2, 3});
  const Tensor g = Tensor::from_vector(std::vector<double>{0.3, -1.2}, {2, 1});
  const double s0 = sigmoid(0.3), s1 = sigmoid(-1.2);
  const Tensor expected =
      Tensor::from_vector(std::vector<double>{s0, -2 * s0, 3 * s0, 0.5 * s1, 4 * s1, -s1}, {2, 3});
  EXPECT_TRUE(test::close_as(sigmoid_gate_forward(out, g), expected, DType::f64));
}

TEST(SigmoidGate, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Tensor out = test::random_normal({6, 5}, DType::f64, seed);
  Tensor g = test::random_normal({6, 1}, DType::f64, seed + 1, Device::cpu(), 2.0);
  const Tensor w = test::random_normal({6, 5}, DType::f64, seed + 2);
  auto loss = [&] { return test::dot(sigmoid_gate_forward(out, g), w); };
  const SigmoidGateGrads grads = sigmoid_gate_backward(w, out, g);
  EXPECT_TRUE(
      test::close(grads.out, test::numerical_gradient(loss, out), test::kGradCheckTol, "d_out"));
  EXPECT_TRUE(test::close(grads.gate_logits, test::numerical_gradient(loss, g), test::kGradCheckTol,
                          "d_gate"));
}

TEST(SigmoidGate, Bf16ComputesInFp32AndRejectsBadInput) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor out = test::random_normal({7, 16}, DType::bf16, seed);
  const Tensor g = test::random_normal({7, 1}, DType::bf16, seed + 1);
  EXPECT_TRUE(
      test::equal(sigmoid_gate_forward(out, g),
                  sigmoid_gate_forward(out.to(DType::f32), g.to(DType::f32)).to(DType::bf16)));
  EXPECT_THROW(sigmoid_gate_forward(out, Tensor::zeros({7, 2}, DType::bf16)), moe::Error);
  EXPECT_THROW(sigmoid_gate_forward(out, Tensor::zeros({7, 1}, DType::f32)), moe::Error);
  EXPECT_THROW(sigmoid_gate_backward(Tensor::zeros({7, 15}, DType::bf16), out, g), moe::Error);
}

}  // namespace
}  // namespace moe::ops
