// grouped_gemm / grouped_gemm_wgrad on the CPU: known answers, equality with dense gemm per
// expert, experts without tokens, the padding rows, fp64 finite-difference checks of the
// dgrad and wgrad paths, bf16 computed in f32, degenerate sizes, and errors naming the op.
#include "moe/ops/grouped_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/ops/gemm.h"

namespace moe {
namespace {

template <class Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

Tensor counts_tensor(const std::vector<int64_t>& counts, DType dtype = DType::i64) {
  return Tensor::from_vector(counts, {static_cast<int64_t>(counts.size())}).to(dtype);
}

Tensor expert(const Tensor& w, int64_t e) {
  return w.rows(e, 1).reshape({w.size(1), w.size(2)});
}

// y_e = x_e op(w_e) by dense gemm per expert; rows past sum(counts) zero.
Tensor per_expert_forward(const Tensor& x, const Tensor& w, bool trans_w,
                          const std::vector<int64_t>& counts) {
  const int64_t n = trans_w ? w.size(1) : w.size(2);
  Tensor y = Tensor::zeros({x.size(0), n}, x.dtype());
  int64_t start = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    Tensor y_e = y.rows(start, counts[e]);
    ops::gemm(x.rows(start, counts[e]), false, expert(w, static_cast<int64_t>(e)), trans_w, y_e);
    start += counts[e];
  }
  return y;
}

// dw_e = base_e + dy_e^T x_e by dense gemm per expert.
Tensor per_expert_wgrad(const Tensor& dy, const Tensor& x, const std::vector<int64_t>& counts,
                        const Tensor& base) {
  Tensor dw = base.clone();
  int64_t start = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    Tensor dw_e = expert(dw, static_cast<int64_t>(e));
    ops::gemm(dy.rows(start, counts[e]), true, x.rows(start, counts[e]), false, dw_e, 1.0f, 1.0f);
    start += counts[e];
  }
  return dw;
}

TEST(GroupedGemmCpu, KnownAnswer) {
  // Expert 0 (identity) owns row 0, expert 1 owns rows 1-2, row 3 is padding.
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8}, {4, 2});
  const Tensor w = Tensor::from_vector(std::vector<double>{1, 0, 0, 1, 1, 1, 2, -1}, {2, 2, 2});
  const Tensor w_t = Tensor::from_vector(std::vector<double>{1, 0, 0, 1, 1, 2, 1, -1}, {2, 2, 2});
  const Tensor expected_y =
      Tensor::from_vector(std::vector<double>{1, 2, 7, 2, 11, 4, 0, 0}, {4, 2});
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (DType count_dt : {DType::i64, DType::i32}) {
      SCOPED_TRACE(testing::Message() << dt << " counts " << count_dt);
      const Tensor counts = counts_tensor({1, 2}, count_dt);
      Tensor y = Tensor::full({4, 2}, 99.0, dt);
      ops::grouped_gemm(x.to(dt), w.to(dt), /*trans_w=*/true, counts, y);
      EXPECT_TRUE(test::equal(y, expected_y.to(dt)));
      y.fill_(99.0);
      ops::grouped_gemm(x.to(dt), w_t.to(dt), /*trans_w=*/false, counts, y);
      EXPECT_TRUE(test::equal(y, expected_y.to(dt)));

      // dw_0 = [1 0]^T [1 2];  dw_1 = [[0 1] [1 1]]^T [[3 4] [5 6]];  the padding row of dy
      // (9 9) is ignored.
      const Tensor dy = Tensor::from_vector(std::vector<double>{1, 0, 0, 1, 1, 1, 9, 9}, {4, 2});
      Tensor dw = Tensor::full({2, 2, 2}, 99.0, dt);
      ops::grouped_gemm_wgrad(dy.to(dt), x.to(dt), counts, dw, /*accumulate=*/false);
      EXPECT_TRUE(test::equal(
          dw, Tensor::from_vector(std::vector<double>{1, 2, 0, 0, 5, 6, 8, 10}, {2, 2, 2}).to(dt)));
      ops::grouped_gemm_wgrad(dy.to(dt), x.to(dt), counts, dw, /*accumulate=*/true);
      EXPECT_TRUE(test::equal(
          dw,
          Tensor::from_vector(std::vector<double>{2, 4, 0, 0, 10, 12, 16, 20}, {2, 2, 2}).to(dt)));
    }
}

TEST(GroupedGemmCpu, EqualsDenseGemmPerExpertWithEmptyExperts) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const std::vector<int64_t> counts = {3, 0, 4, 0, 2};  // 9 rows used of 12: 3 padding rows
  const int64_t rows = 12, k = 7, n = 5, experts = 5;
  for (DType dt : {DType::f64, DType::f32})
    for (bool trans_w : {true, false})
      for (DType count_dt : {DType::i64, DType::i32}) {
        SCOPED_TRACE(testing::Message() << dt << " trans_w=" << trans_w << " counts " << count_dt);
        const Tensor x = test::random_normal({rows, k}, dt, seed);
        const Tensor w = test::random_normal(trans_w ? Shape{experts, n, k} : Shape{experts, k, n},
                                             dt, seed + 1);
        Tensor y = Tensor::full({rows, n}, NAN, dt);  // every row must be written
        ops::grouped_gemm(x, w, trans_w, counts_tensor(counts, count_dt), y);
        EXPECT_TRUE(test::close_as(y, per_expert_forward(x, w, trans_w, counts), dt));
        EXPECT_TRUE(test::equal(y.rows(9, 3), Tensor::zeros({3, n}, dt)));

        // The host copy of the counts gives the same result without reading the tensor.
        Tensor y_host = Tensor::full({rows, n}, NAN, dt);
        ops::grouped_gemm(x, w, trans_w, counts_tensor(counts, count_dt), y_host, counts);
        EXPECT_TRUE(test::equal(y_host, y));
      }
}

TEST(GroupedGemmCpu, WgradEqualsDenseGemmPerExpert) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const std::vector<int64_t> counts = {0, 5, 0, 0, 3, 1};  // 9 of 11 rows
  const int64_t rows = 11, k = 6, n = 4, experts = 6;
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor dy = test::random_normal({rows, n}, dt, seed);
    const Tensor x = test::random_normal({rows, k}, dt, seed + 1);
    const Tensor counts_t = counts_tensor(counts);
    // Written: experts without tokens get zeros (NaN would survive a skipped expert).
    Tensor dw = Tensor::full({experts, n, k}, NAN, dt);
    ops::grouped_gemm_wgrad(dy, x, counts_t, dw, /*accumulate=*/false);
    EXPECT_TRUE(
        test::close_as(dw, per_expert_wgrad(dy, x, counts, Tensor::zeros(dw.shape(), dt)), dt));
    EXPECT_TRUE(test::equal(dw.rows(0, 1), Tensor::zeros({1, n, k}, dt)));
    // Accumulated: dw += dy^T x; experts without tokens keep their gradient.
    const Tensor base = test::random_normal({experts, n, k}, dt, seed + 2);
    Tensor acc = base.clone();
    ops::grouped_gemm_wgrad(dy, x, counts_t, acc, /*accumulate=*/true);
    EXPECT_TRUE(test::close_as(acc, per_expert_wgrad(dy, x, counts, base), dt));
    EXPECT_TRUE(test::equal(acc.rows(2, 2), base.rows(2, 2)));
  }
}

// L = <grouped_gemm(x, w), R>. dL/dx by grouped_gemm(R, w, !trans_w) and dL/dw by the wgrad,
// the way the MoE experts' backward computes them.
TEST(GroupedGemmCpu, DgradAndWgradMatchFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const std::vector<int64_t> counts = {3, 0, 4};  // 7 of 9 rows; expert 1 has no tokens
  const int64_t rows = 9, k = 4, n = 3, experts = 3;
  const Tensor counts_t = counts_tensor(counts);
  for (bool trans_w : {true, false}) {
    SCOPED_TRACE(testing::Message() << "trans_w=" << trans_w);
    Tensor x = test::random_normal({rows, k}, DType::f64, seed);
    Tensor w = test::random_normal(trans_w ? Shape{experts, n, k} : Shape{experts, k, n},
                                   DType::f64, seed + 1);
    const Tensor r = test::random_normal({rows, n}, DType::f64, seed + 2);
    auto loss = [&] {
      Tensor y = Tensor::empty({rows, n}, DType::f64);
      ops::grouped_gemm(x, w, trans_w, counts_t, y);
      return test::dot(y, r);
    };

    // dx_e = R_e op(w_e)^T: the same grouped GEMM with the transpose flipped.
    Tensor dx = Tensor::full({rows, k}, NAN, DType::f64);
    ops::grouped_gemm(r, w, !trans_w, counts_t, dx);
    EXPECT_TRUE(test::close(dx, test::numerical_gradient(loss, x), test::kGradCheckTol));

    // dw_e = R_e^T x_e ([N, K], trans_w) or x_e^T R_e ([K, N]).
    Tensor dw = Tensor::full(w.shape(), NAN, DType::f64);
    if (trans_w)
      ops::grouped_gemm_wgrad(r, x, counts_t, dw, /*accumulate=*/false);
    else
      ops::grouped_gemm_wgrad(x, r, counts_t, dw, /*accumulate=*/false);
    EXPECT_TRUE(test::close(dw, test::numerical_gradient(loss, w), test::kGradCheckTol));
  }
}

TEST(GroupedGemmCpu, HalfPrecisionComputesInF32) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const std::vector<int64_t> counts = {17, 0, 30, 2};
  const int64_t rows = 51, k = 33, n = 19, experts = 4;
  const Tensor counts_t = counts_tensor(counts, DType::i32);
  for (DType dt : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = test::random_normal({rows, k}, dt, seed);
    const Tensor w = test::random_normal({experts, n, k}, dt, seed + 1);
    const Tensor x32 = x.to(DType::f32), w32 = w.to(DType::f32);
    Tensor y = Tensor::empty({rows, n}, dt);
    ops::grouped_gemm(x, w, true, counts_t, y);
    EXPECT_TRUE(test::close_as(y, per_expert_forward(x32, w32, true, counts), dt));

    // fp32 main gradients from half inputs, accumulated.
    const Tensor dy = test::random_normal({rows, n}, dt, seed + 2);
    const Tensor base = test::random_normal({experts, n, k}, DType::f32, seed + 3);
    Tensor dw = base.clone();
    ops::grouped_gemm_wgrad(dy, x, counts_t, dw, /*accumulate=*/true);
    EXPECT_TRUE(
        test::close_as(dw, per_expert_wgrad(dy.to(DType::f32), x32, counts, base), DType::f32));
    // Half gradients, written.
    Tensor dw16 = Tensor::empty({experts, n, k}, dt);
    ops::grouped_gemm_wgrad(dy, x, counts_t, dw16, /*accumulate=*/false);
    EXPECT_TRUE(test::close_as(
        dw16,
        per_expert_wgrad(dy.to(DType::f32), x32, counts, Tensor::zeros(base.shape(), DType::f32)),
        dt));
  }
}

TEST(GroupedGemmCpu, DegenerateSizes) {
  // No rows at all.
  Tensor y0 = Tensor::empty({0, 3}, DType::f32);
  ops::grouped_gemm(Tensor::empty({0, 2}, DType::f32), Tensor::zeros({2, 3, 2}, DType::f32), true,
                    counts_tensor({0, 0}), y0);
  Tensor dw0 = Tensor::full({2, 3, 2}, 5.0, DType::f32);
  ops::grouped_gemm_wgrad(Tensor::empty({0, 3}, DType::f32), Tensor::empty({0, 2}, DType::f32),
                          counts_tensor({0, 0}), dw0, false);
  EXPECT_TRUE(test::equal(dw0, Tensor::zeros({2, 3, 2}, DType::f32)));
  // Rows, but every expert empty: all of y is padding.
  Tensor y = Tensor::full({4, 3}, NAN, DType::f32);
  ops::grouped_gemm(Tensor::full({4, 2}, 1.0, DType::f32), Tensor::full({2, 3, 2}, 1.0, DType::f32),
                    true, counts_tensor({0, 0}), y);
  EXPECT_TRUE(test::equal(y, Tensor::zeros({4, 3}, DType::f32)));
  // No experts.
  Tensor y_none = Tensor::full({4, 3}, NAN, DType::f32);
  ops::grouped_gemm(Tensor::full({4, 2}, 1.0, DType::f32), Tensor::empty({0, 3, 2}, DType::f32),
                    true, counts_tensor({}), y_none);
  EXPECT_TRUE(test::equal(y_none, Tensor::zeros({4, 3}, DType::f32)));
  // Empty inner dimension: the products are zero.
  Tensor y_k0 = Tensor::full({4, 3}, NAN, DType::f32);
  ops::grouped_gemm(Tensor::empty({4, 0}, DType::f32), Tensor::empty({2, 3, 0}, DType::f32), true,
                    counts_tensor({1, 2}), y_k0);
  EXPECT_TRUE(test::equal(y_k0, Tensor::zeros({4, 3}, DType::f32)));
}

TEST(GroupedGemmCpu, BadInputsGiveErrorsNamingTheOp) {
  const Tensor x = Tensor::zeros({6, 4}, DType::f32);
  const Tensor w = Tensor::zeros({2, 3, 4}, DType::f32);  // [E, N, K]
  const Tensor counts = counts_tensor({2, 3});
  Tensor y = Tensor::zeros({6, 3}, DType::f32);
  expect_error(
      [&] {
        ops::grouped_gemm(x, w, true, counts_tensor({4, 3}), y);
      },
      "grouped_gemm: tokens_per_expert sums to 7 but there are only 6 rows");
  expect_error(
      [&] {
        ops::grouped_gemm(x, w, true, counts_tensor({-1, 3}), y);
      },
      "grouped_gemm: tokens_per_expert[0] = -1 is negative");
  expect_error([&] { ops::grouped_gemm(x, w, false, counts, y); }, "grouped_gemm: w [2, 3, 4]");
  Tensor y_bad = Tensor::zeros({6, 4}, DType::f32);
  expect_error([&] { ops::grouped_gemm(x, w, true, counts, y_bad); },
               "grouped_gemm: y must have shape [6, 3]");
  expect_error([&] { ops::grouped_gemm(x, w, true, counts.to(DType::f32), y); },
               "grouped_gemm: tokens_per_expert must be i64 or i32");
  expect_error([&] { ops::grouped_gemm(x, w, true, counts_tensor({6}), y); },
               "grouped_gemm: tokens_per_expert has 1 entries for 2 experts");
  const std::vector<int64_t> three = {1, 1, 1};
  expect_error([&] { ops::grouped_gemm(x, w, true, counts, y, three); },
               "grouped_gemm: host_tokens_per_expert has 3 entries for 2 experts");
  expect_error([&] { ops::grouped_gemm(x, w.to(DType::f64), true, counts, y); },
               "grouped_gemm: w must be f32");
  expect_error(
      [&] {
        ops::grouped_gemm(x.reshape({6, 2, 2}), w, true, counts, y);
      },
      "grouped_gemm: x must be 2-D");

  const Tensor dy = Tensor::zeros({6, 3}, DType::f32);
  Tensor dw = Tensor::zeros({2, 3, 4}, DType::f32);
  Tensor dw64 = Tensor::zeros({2, 3, 4}, DType::f64);
  expect_error([&] { ops::grouped_gemm_wgrad(dy, x, counts, dw64, false); },
               "grouped_gemm_wgrad: dw must be f32 for f32 inputs");
  expect_error([&] { ops::grouped_gemm_wgrad(dy.rows(0, 5), x, counts, dw, false); },
               "grouped_gemm_wgrad: dy [5, 3] and x [6, 4] have different row counts");
  Tensor dw_bad = Tensor::zeros({2, 4, 3}, DType::f32);
  expect_error([&] { ops::grouped_gemm_wgrad(dy, x, counts, dw_bad, false); },
               "grouped_gemm_wgrad: dw must have shape [2, 3, 4]");
  expect_error(
      [&] {
        ops::grouped_gemm_wgrad(dy, x, counts_tensor({5, 5}), dw, true);
      },
      "grouped_gemm_wgrad: tokens_per_expert sums to 10");
}

TEST(GroupedGemmCpu, BackendNamesRoundTrip) {
  for (const char* name : {"automatic", "per_expert_lt", "per_expert_streams", "per_expert_threads",
                           "chunked_batched", "grouped_batched"})
    EXPECT_STREQ(ops::grouped_gemm_backend_name(ops::parse_grouped_gemm_backend(name)), name);
  expect_error([] { ops::parse_grouped_gemm_backend("fastest"); },
               "unknown grouped GEMM backend 'fastest' (--moe-grouped-gemm-backend)");
  // On the CPU every call reads its counts (they are already on the host): no backend changes it.
  const Tensor x = Tensor::zeros({4, 8}, DType::bf16), w = Tensor::zeros({2, 8, 8}, DType::bf16);
  Tensor y = Tensor::zeros({4, 8}, DType::bf16);
  EXPECT_TRUE(ops::grouped_gemm_reads_counts(ops::GroupedGemmBackend::automatic, x, w, y));
}

}  // namespace
}  // namespace moe
