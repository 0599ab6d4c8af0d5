// CUDA gemm (cuBLASLt) against the CPU reference: every transpose combination at odd sizes,
// f32 (true fp32: the f32 tolerance fails under TF32), f64, bf16/f16 and bf16 -> f32, beta
// accumulation, zero sizes, and row views whose addresses are not 16-byte aligned.
#include <gtest/gtest.h>

#include <cmath>

#include "common/check.h"
#include "moe/ops/gemm.h"

namespace moe {
namespace {

Shape stored(int64_t rows, int64_t cols, bool trans) {
  return trans ? Shape{cols, rows} : Shape{rows, cols};
}

// The CPU reference of alpha op(A) op(B) + beta C, in f32 for half inputs (on the same,
// already rounded values), returned as f64 for comparison.
Tensor cpu_reference(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c,
                     float alpha, float beta) {
  const bool half = a.dtype() == DType::bf16 || a.dtype() == DType::f16;
  const DType compute = half ? DType::f32 : a.dtype();
  Tensor out = c.to(compute);
  ops::gemm(a.to(compute), ta, b.to(compute), tb, out, alpha, beta);
  return out.to(DType::f64);
}

struct DtypeCase {
  DType in, out;
};

TEST(GemmCuda, MatchesCpuEveryTransposeOddSizes) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  struct Dims {
    int64_t m, n, k;
  };
  const Dims dims[] = {{1, 1, 1},    {17, 259, 257}, {257, 17, 259}, {259, 257, 1},
                       {1, 259, 17}, {259, 1, 257},  {257, 259, 259}};
  const DtypeCase dtypes[] = {{DType::f32, DType::f32},
                              {DType::f64, DType::f64},
                              {DType::bf16, DType::bf16},
                              {DType::bf16, DType::f32},
                              {DType::f16, DType::f16}};
  struct Scale {
    float alpha, beta;
  };
  for (const Dims& d : dims)
    for (const DtypeCase& dt : dtypes)
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (Scale s : {Scale{1.0f, 0.0f}, Scale{0.5f, 1.0f}}) {
            SCOPED_TRACE(testing::Message() << dt.in << "->" << dt.out << " m=" << d.m << " n="
                                            << d.n << " k=" << d.k << " ta=" << ta << " tb=" << tb
                                            << " alpha=" << s.alpha << " beta=" << s.beta);
            const Tensor a = test::random_normal(stored(d.m, d.k, ta), dt.in, seed);
            const Tensor b = test::random_normal(stored(d.k, d.n, tb), dt.in, seed + 1);
            const Tensor c0 = test::random_normal({d.m, d.n}, dt.out, seed + 2);
            Tensor c = c0.to(Device::cuda());
            if (s.beta == 0.0f) c.fill_(NAN);  // beta = 0 must not read C
            ops::gemm(a.to(Device::cuda()), ta, b.to(Device::cuda()), tb, c, s.alpha, s.beta);
            // Half inputs with f32 output compute exactly what the f32 reference computes.
            EXPECT_TRUE(test::close_as(c.to(Device::cpu()),
                                       cpu_reference(a, ta, b, tb, c0, s.alpha, s.beta), dt.out));
          }
}

TEST(GemmCuda, ZeroSizes) {
  MOE_REQUIRE_GPU();
  const Device gpu = Device::cuda();
  for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor c_m0 = Tensor::empty({0, 5}, dt, gpu);
    ops::gemm(Tensor::empty({0, 3}, dt, gpu), false, Tensor::zeros({3, 5}, dt, gpu), false, c_m0);
    Tensor c_n0 = Tensor::empty({4, 0}, dt, gpu);
    ops::gemm(Tensor::zeros({4, 3}, dt, gpu), false, Tensor::empty({0, 3}, dt, gpu), true, c_n0);
    // K = 0: C = beta C, and beta = 0 writes zeros over NaN.
    Tensor c = Tensor::full({4, 5}, NAN, dt, gpu);
    ops::gemm(Tensor::empty({4, 0}, dt, gpu), false, Tensor::empty({0, 5}, dt, gpu), false, c);
    EXPECT_TRUE(test::equal(c.to(Device::cpu()), Tensor::zeros({4, 5}, dt)));
    c.fill_(3.0);
    ops::gemm(Tensor::empty({0, 4}, dt, gpu), true, Tensor::empty({5, 0}, dt, gpu), true, c, 1.0f,
              0.5f);
    EXPECT_TRUE(test::equal(c.to(Device::cpu()), Tensor::full({4, 5}, 1.5, dt)));
  }
  // K = 0 with half inputs and f32 output.
  Tensor c32 = Tensor::full({2, 3}, 2.0, DType::f32, gpu);
  ops::gemm(Tensor::empty({2, 0}, DType::bf16, gpu), false, Tensor::empty({0, 3}, DType::bf16, gpu),
            false, c32, 1.0f, -1.0f);
  EXPECT_TRUE(test::equal(c32.to(Device::cpu()), Tensor::full({2, 3}, -2.0, DType::f32)));
}

// Row views start at addresses that are only element-aligned (an odd row length in bf16 puts
// row 1 at 2 bytes past a 4-byte boundary). The same shape runs aligned first, so a plan cached
// for 256-byte alignment must not be reused for the view.
TEST(GemmCuda, UnalignedRowViews) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t m = 33, n = 259, k = 257;
  for (DType dt : {DType::bf16, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor a_full = test::random_normal({m + 1, k}, dt, seed);
    const Tensor b = test::random_normal({n, k}, dt, seed + 1);
    const Tensor a_gpu = a_full.to(Device::cuda()), b_gpu = b.to(Device::cuda());
    const Tensor a_view = a_full.rows(1, m).clone();
    const Tensor expected =
        cpu_reference(a_view, false, b, true, Tensor::zeros({m, n}, dt), 1.0f, 0.0f);

    Tensor c_aligned = Tensor::empty({m, n}, dt, Device::cuda());
    ops::gemm(a_gpu.rows(1, m).clone(), false, b_gpu, true, c_aligned);
    EXPECT_TRUE(test::close_as(c_aligned.to(Device::cpu()), expected, dt));

    Tensor c_full = Tensor::full({m + 1, n}, 7.0, dt, Device::cuda());
    Tensor c_view = c_full.rows(1, m);
    ops::gemm(a_gpu.rows(1, m), false, b_gpu, true, c_view);
    EXPECT_TRUE(test::close_as(c_full.rows(1, m).to(Device::cpu()), expected, dt));
    // The row before the view is untouched.
    EXPECT_TRUE(test::equal(c_full.rows(0, 1).to(Device::cpu()), Tensor::full({1, n}, 7.0, dt)));
  }
}

}  // namespace
}  // namespace moe
