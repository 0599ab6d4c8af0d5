// AdamW and the squared norm on CUDA against the CPU reference: odd sizes, f32 and bf16
// states, bf16 / f32 model copies, several steps; the norm is bitwise reproducible.
#include <cmath>
#include <limits>

#include "common/check.h"
#include "moe/ops/adamw.h"

namespace moe {
namespace {

using test::gpu;
using test::host;

TEST(AdamWCuda, MatchesTheCpuReference) {
  MOE_REQUIRE_GPU();
  for (const DType state : {DType::f32, DType::bf16}) {
    for (const DType model_dtype : {DType::f32, DType::bf16}) {
      const uint64_t seed = test::fresh_seed();
      SCOPED_TRACE(seed);
      SCOPED_TRACE(dtype_name(state));
      SCOPED_TRACE(dtype_name(model_dtype));
      const int64_t n = 100003;  // odd: no vector packs line up
      Tensor p = test::random_normal({n}, DType::f32, seed);
      Tensor m = Tensor::zeros({n}, state), v = Tensor::zeros({n}, state);
      Tensor model = Tensor::zeros({n}, model_dtype);
      Tensor dp = gpu(p), dm = gpu(m), dv = gpu(v), dmodel = gpu(model);
      for (int64_t t = 1; t <= 3; ++t) {
        const Tensor g = test::random_normal({n}, DType::f32, seed + t, Device::cpu(), 0.1);
        ops::AdamWStep s;
        s.lr = 1e-2;
        s.weight_decay = 0.1;
        s.step = t;
        s.grad_scale = 0.5;
        ops::adamw_step(p, g, m, v, s, model);
        ops::adamw_step(dp, gpu(g), dm, dv, s, dmodel);
      }
      EXPECT_TRUE(test::close(host(dp), p, test::tolerance(DType::f32), "param"));
      EXPECT_TRUE(test::close(host(dm).to(DType::f32), m.to(DType::f32),
                              test::tolerance(state), "exp_avg"));
      EXPECT_TRUE(test::close(host(dv).to(DType::f32), v.to(DType::f32),
                              test::tolerance(state), "exp_avg_sq"));
      EXPECT_TRUE(test::close(host(dmodel).to(DType::f32), model.to(DType::f32),
                              test::tolerance(model_dtype), "model copy"));
    }
  }
}

// The kernel updates 4 elements per thread when every pointer is aligned to its pack and one
// at a time otherwise; both must give the same bits. rows(1, n) starts one element in, so no
// pack lines up there.
TEST(AdamWCuda, WidePacksAndSingleElementsGiveTheSameBits) {
  MOE_REQUIRE_GPU();
  for (const DType state : {DType::f32, DType::bf16}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE(seed);
    SCOPED_TRACE(dtype_name(state));
    const int64_t n = 4099;
    const Tensor p0 = test::random_normal({n + 1}, DType::f32, seed);
    const Tensor g0 = test::random_normal({n + 1}, DType::f32, seed + 1, Device::cpu(), 0.1);
    Tensor p_wide = gpu(p0.rows(0, n)), g_wide = gpu(g0.rows(0, n));
    Tensor p_all = gpu(p0), g_all = gpu(g0);
    // The unaligned operands: the same values, one element into a larger buffer.
    p_all.rows(1, n).copy_(p_wide);
    g_all.rows(1, n).copy_(g_wide);
    Tensor p_one = p_all.rows(1, n);
    Tensor m_wide = gpu(Tensor::zeros({n}, state)), v_wide = gpu(Tensor::zeros({n}, state));
    Tensor m_all = gpu(Tensor::zeros({n + 1}, state)), v_all = gpu(Tensor::zeros({n + 1}, state));
    Tensor m_one = m_all.rows(1, n), v_one = v_all.rows(1, n);
    Tensor model_wide = gpu(Tensor::zeros({n}, DType::bf16));
    Tensor model_all = gpu(Tensor::zeros({n + 1}, DType::bf16));
    Tensor model_one = model_all.rows(1, n);
    for (int64_t t = 1; t <= 2; ++t) {
      ops::AdamWStep s;
      s.lr = 1e-2;
      s.weight_decay = 0.1;
      s.step = t;
      s.grad_scale = 0.7;
      ops::adamw_step(p_wide, g_wide, m_wide, v_wide, s, model_wide);
      ops::adamw_step(p_one, g_all.rows(1, n), m_one, v_one, s, model_one);
    }
    EXPECT_TRUE(test::equal(host(p_one), host(p_wide)));
    EXPECT_TRUE(test::equal(host(m_one), host(m_wide)));
    EXPECT_TRUE(test::equal(host(v_one), host(v_wide)));
    EXPECT_TRUE(test::equal(host(model_one), host(model_wide)));
  }
}

TEST(SquaredNormCuda, MatchesTheCpuAndIsReproducible) {
  MOE_REQUIRE_GPU();
  for (const DType dtype : {DType::f32, DType::bf16}) {
    for (const int64_t n : {int64_t(0), int64_t(1), int64_t(257), int64_t(3000017)}) {
      const uint64_t seed = test::fresh_seed();
      SCOPED_TRACE(seed);
      const Tensor x = test::random_normal({n}, DType::f32, seed).to(dtype);
      const Tensor d = gpu(x);
      const Tensor a = host(ops::squared_norm(d)), b = host(ops::squared_norm(d));
      EXPECT_TRUE(test::equal(a, b, "two runs"));
      EXPECT_TRUE(test::close(a, ops::squared_norm(x), test::tolerance(DType::f32), "norm"));
    }
  }
  Tensor x = test::random_normal({1000}, DType::f32, 7);
  x.data<float>()[999] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(std::isfinite(host(ops::squared_norm(gpu(x))).to_double_vector()[0]));
}

}  // namespace
}  // namespace moe
