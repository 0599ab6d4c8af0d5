// gemm on the CPU: known answers, every transpose combination against a plain triple loop,
// alpha/beta semantics, zero sizes, bf16/f16 computed in f32, the linear-layer gradients by
// finite differences, and errors that name the op.
#include "moe/ops/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "common/check.h"

namespace moe {
namespace {

// Expects `fn` to throw moe::Error with `needle` in its message.
template <class Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// alpha op(A) op(B) + beta C in double, by the definition.
Tensor naive_gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                  double alpha, double beta) {
  const int64_t m = trans_a ? a.size(1) : a.size(0), k = trans_a ? a.size(0) : a.size(1);
  const int64_t n = trans_b ? b.size(0) : b.size(1);
  const auto av = a.to_double_vector(), bv = b.to_double_vector(), cv = c.to_double_vector();
  std::vector<double> out(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double x = trans_a ? av[p * m + i] : av[i * k + p];
        const double y = trans_b ? bv[j * k + p] : bv[p * n + j];
        s += x * y;
      }
      out[i * n + j] = alpha * s + (beta == 0 ? 0.0 : beta * cv[i * n + j]);
    }
  return Tensor::from_vector(out, {m, n});
}

Shape stored(int64_t rows, int64_t cols, bool trans) {
  return trans ? Shape{cols, rows} : Shape{rows, cols};
}

TEST(GemmCpu, KnownAnswerEveryTranspose) {
  // [[1 2 3] [4 5 6]] @ [[7 8] [9 10] [11 12]] = [[58 64] [139 154]] (exact in bf16 too).
  const std::vector<double> a = {1, 2, 3, 4, 5, 6}, a_t = {1, 4, 2, 5, 3, 6};
  const std::vector<double> b = {7, 8, 9, 10, 11, 12}, b_t = {7, 9, 11, 8, 10, 12};
  const Tensor expected = Tensor::from_vector(std::vector<double>{58, 64, 139, 154}, {2, 2});
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Tensor at = Tensor::from_vector(ta ? a_t : a, ta ? Shape{3, 2} : Shape{2, 3}).to(dt);
        const Tensor bt = Tensor::from_vector(tb ? b_t : b, tb ? Shape{2, 3} : Shape{3, 2}).to(dt);
        Tensor c = Tensor::full({2, 2}, 99.0, dt);
        ops::gemm(at, ta, bt, tb, c);
        EXPECT_TRUE(test::equal(c, expected.to(dt))) << dt << " ta=" << ta << " tb=" << tb;
      }
  }
}

TEST(GemmCpu, MatchesDefinitionAllTransposesAlphaBeta) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  struct Dims {
    int64_t m, n, k;
  };
  for (Dims d : {Dims{1, 1, 1}, Dims{3, 5, 7}, Dims{17, 4, 9}, Dims{2, 33, 1}}) {
    for (DType dt : {DType::f64, DType::f32})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          SCOPED_TRACE(testing::Message() << dt << " m=" << d.m << " n=" << d.n << " k=" << d.k
                                          << " ta=" << ta << " tb=" << tb);
          const Tensor a = test::random_normal(stored(d.m, d.k, ta), dt, seed);
          const Tensor b = test::random_normal(stored(d.k, d.n, tb), dt, seed + 1);
          Tensor c = test::random_normal({d.m, d.n}, dt, seed + 2);
          const Tensor expected = naive_gemm(a, ta, b, tb, c, 0.75, -0.5);
          ops::gemm(a, ta, b, tb, c, 0.75f, -0.5f);
          EXPECT_TRUE(test::close(c, expected.to(dt), test::tolerance(dt)));
          // beta = 0 must ignore C entirely, NaN included (BLAS semantics).
          c.fill_(NAN);
          ops::gemm(a, ta, b, tb, c);
          EXPECT_TRUE(
              test::close(c, naive_gemm(a, ta, b, tb, c, 1, 0).to(dt), test::tolerance(dt)));
        }
  }
}

TEST(GemmCpu, HalfInputsAccumulateInF32AndRoundOnce) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (DType dt : {DType::bf16, DType::f16}) {
    const Tensor a = test::random_normal({17, 259}, dt, seed);
    const Tensor b = test::random_normal({33, 259}, dt, seed + 1);
    const Tensor reference =
        naive_gemm(a, false, b, true, Tensor::zeros({17, 33}, DType::f64), 1, 0);
    // f32 output: the fp32 product of the (exactly upcast) inputs.
    Tensor c32 = Tensor::empty({17, 33}, DType::f32);
    ops::gemm(a, false, b, true, c32);
    EXPECT_TRUE(test::close_as(c32, reference.to(DType::f32), DType::f32)) << dt;
    // Half output: the f32 result rounded once, not a product accumulated in half precision.
    Tensor c16 = Tensor::empty({17, 33}, dt);
    ops::gemm(a, false, b, true, c16);
    EXPECT_TRUE(test::equal(c16, c32.to(dt))) << dt;
    EXPECT_TRUE(test::close_as(c16, reference, dt)) << dt;
    // Accumulating into f32 (fp32 main gradients): c += a b^T.
    Tensor acc = test::random_normal({17, 33}, DType::f32, seed + 2);
    const Tensor before = acc.clone();
    ops::gemm(a, false, b, true, acc, 1.0f, 1.0f);
    const Tensor expected = naive_gemm(a, false, b, true, before, 1, 1);
    EXPECT_TRUE(test::close_as(acc, expected.to(DType::f32), DType::f32)) << dt;
  }
}

TEST(GemmCpu, ZeroSizes) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    // M = 0 or N = 0: nothing to compute, nothing to touch.
    Tensor c_m0 = Tensor::empty({0, 4}, dt);
    ops::gemm(Tensor::empty({0, 3}, dt), false, Tensor::full({3, 4}, 1.0, dt), false, c_m0);
    Tensor c_n0 = Tensor::empty({2, 0}, dt);
    ops::gemm(Tensor::full({2, 3}, 1.0, dt), false, Tensor::empty({0, 3}, dt), true, c_n0);
    EXPECT_EQ(ops::matmul(Tensor::empty({0, 3}, dt), Tensor::full({3, 4}, 1.0, dt)).shape(),
              (Shape{0, 4}));
    // K = 0: the product is zero, so C = beta * C; beta = 0 writes zeros even over NaN.
    Tensor c = Tensor::full({2, 4}, NAN, dt);
    ops::gemm(Tensor::empty({2, 0}, dt), false, Tensor::empty({0, 4}, dt), false, c);
    EXPECT_TRUE(test::equal(c, Tensor::zeros({2, 4}, dt)));
    c.fill_(3.0);
    ops::gemm(Tensor::empty({0, 2}, dt), true, Tensor::empty({4, 0}, dt), true, c, 1.0f, 0.5f);
    EXPECT_TRUE(test::equal(c, Tensor::full({2, 4}, 1.5, dt)));
  }
}

TEST(GemmCpu, MatmulAllocatesTheProduct) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor a = test::random_normal({5, 3}, DType::bf16, seed);
  const Tensor b = test::random_normal({4, 3}, DType::bf16, seed + 1);
  const Tensor y = ops::matmul(a, b, false, true);
  EXPECT_EQ(y.shape(), (Shape{5, 4}));
  EXPECT_EQ(y.dtype(), DType::bf16);
  const Tensor y32 = ops::matmul(a, b, false, true, DType::f32);
  EXPECT_EQ(y32.dtype(), DType::f32);
  EXPECT_TRUE(
      test::close_as(y32, naive_gemm(a, false, b, true, y32, 1, 0).to(DType::f32), DType::f32));
  EXPECT_TRUE(test::equal(y, y32.to(DType::bf16)));
}

// The linear layer of gemm.h: y = x W^T, dx = dy W, dW += dy^T x, checked against central
// differences of L = <y, R> in fp64.
TEST(GemmCpu, LinearLayerGradientsMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Tensor x = test::random_normal({5, 4}, DType::f64, seed);
  Tensor w = test::random_normal({3, 4}, DType::f64, seed + 1);
  const Tensor r = test::random_normal({5, 3}, DType::f64, seed + 2);
  auto loss = [&] { return test::dot(ops::matmul(x, w, false, true), r); };

  Tensor dx = Tensor::full({5, 4}, NAN, DType::f64);  // activation gradient: written
  ops::gemm(r, false, w, false, dx);
  EXPECT_TRUE(test::close(dx, test::numerical_gradient(loss, x), test::kGradCheckTol));

  const Tensor previous = test::random_normal({3, 4}, DType::f64, seed + 3);
  Tensor dw = previous.clone();  // parameter gradient: accumulates
  ops::gemm(r, true, x, false, dw, 1.0f, 1.0f);
  const Tensor numeric = test::numerical_gradient(loss, w);
  const auto got = dw.to_double_vector(), base = previous.to_double_vector();
  std::vector<double> increment(got.size());
  for (size_t i = 0; i < got.size(); ++i) increment[i] = got[i] - base[i];
  EXPECT_LE(test::relative_error(increment, numeric.to_double_vector()), test::kGradCheckTol);
}

TEST(GemmCpu, BadInputsGiveErrorsNamingTheOp) {
  const Tensor a = Tensor::zeros({2, 3}, DType::f32), b = Tensor::zeros({3, 4}, DType::f32);
  Tensor c = Tensor::zeros({2, 4}, DType::f32);
  expect_error([&] { ops::gemm(a, false, b, true, c); }, "gemm: inner dimensions differ");
  Tensor wrong_c = Tensor::zeros({4, 2}, DType::f32);
  expect_error([&] { ops::gemm(a, false, b, false, wrong_c); }, "gemm: c must have shape [2, 4]");
  expect_error([&] { ops::gemm(a, false, b.to(DType::f64), false, c); },
               "gemm: a is f32 but b is f64");
  Tensor c64 = Tensor::zeros({2, 4}, DType::f64);
  expect_error([&] { ops::gemm(a, false, b, false, c64); }, "gemm: c must be f32");
  expect_error([&] { ops::gemm(a.to(DType::bf16), false, b.to(DType::bf16), false, c64); },
               "gemm: c must be bf16 or f32");
  Tensor ci = Tensor::zeros({2, 4}, DType::i32);
  expect_error([&] { ops::gemm(a.to(DType::i32), false, b.to(DType::i32), false, ci); },
               "gemm: dtype i32 is not supported");
  expect_error([&] { ops::gemm(a.reshape({1, 2, 3}), false, b, false, c); }, "gemm: a must be 2-D");
  expect_error([&] { ops::gemm(Tensor(), false, b, false, c); }, "gemm: a is undefined");
  expect_error([&] { ops::matmul(a, b, true, false); }, "gemm: inner dimensions differ");
}

}  // namespace
}  // namespace moe
