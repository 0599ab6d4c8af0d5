// CUDA attention against the CPU reference on fresh random inputs, forward (out, lse) and
// backward (dq, dk, dv): f32 (f32 tolerance) and bf16 (the CUDA bf16 result against the CPU f32
// reference on the same bf16-rounded inputs, bf16 tolerance). Sizes: the brief's B = 2, S = 257
// (not a multiple of the 32-row tile), Hq = 8, Hkv = 2 with D = Dv = 128 and the MLA dims
// D = 192, Dv = 128; MQA with tiny odd head dims; D = Dv = 256 (the shared-memory maximum);
// S = 1; full (non-causal) attention; the sbhd layout; empty inputs; large scores; determinism.
// These test the native kernels (backend native); attention_cudnn_cuda_test.cpp tests cuDNN's.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "moe/ops/attention.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;

struct Case {
  int64_t batch, seq, q_heads, kv_heads, head_dim, v_head_dim;
  bool causal = true;
  AttentionLayout layout = AttentionLayout::bshd;
};

std::ostream& operator<<(std::ostream& out, const Case& c) {
  return out << "B=" << c.batch << " S=" << c.seq << " Hq=" << c.q_heads << " Hkv=" << c.kv_heads
             << " D=" << c.head_dim << " Dv=" << c.v_head_dim << (c.causal ? " causal" : " full")
             << (c.layout == AttentionLayout::bshd ? " bshd" : " sbhd");
}

Shape dims(const Case& c, int64_t heads, int64_t dim) {
  if (c.layout == AttentionLayout::bshd) return {c.batch, c.seq, heads, dim};
  return {c.seq, c.batch, heads, dim};
}

using Input = test::PairedInput;

void check_case(const Case& c, DType dt, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << c << " " << dtype_name(dt));
  const Input q = test::paired_input(dims(c, c.q_heads, c.head_dim), dt, seed);
  const Input k = test::paired_input(dims(c, c.kv_heads, c.head_dim), dt, seed + 1);
  const Input v = test::paired_input(dims(c, c.kv_heads, c.v_head_dim), dt, seed + 2);
  const Input dout = test::paired_input(dims(c, c.q_heads, c.v_head_dim), dt, seed + 3);
  AttentionOptions options;
  options.causal = c.causal;
  options.layout = c.layout;
  options.backend = AttentionBackend::native;

  const AttentionOutput got = attention_forward(q.dev, k.dev, v.dev, options);
  const AttentionOutput want = attention_forward(q.ref, k.ref, v.ref, options);
  ASSERT_TRUE(got.out.is_cuda());
  EXPECT_EQ(got.out.dtype(), dt);
  EXPECT_EQ(got.lse.dtype(), DType::f32);
  EXPECT_TRUE(test::close_as(host(got.out), want.out, dt, "out"));
  // lse is f32 on both sides, from the same values: only the summation order differs.
  EXPECT_TRUE(test::close_as(host(got.lse), want.lse, DType::f32, "lse"));

  // The backward of both devices sees the same out and lse (the CUDA forward's).
  const AttentionGrads g =
      attention_backward(dout.dev, q.dev, k.dev, v.dev, got.out, got.lse, options);
  const AttentionGrads r = attention_backward(dout.ref, q.ref, k.ref, v.ref,
                                              host(got.out).to(DType::f32), host(got.lse), options);
  EXPECT_EQ(g.q.dtype(), dt);
  EXPECT_TRUE(test::close_as(host(g.q), r.q, dt, "dq"));
  EXPECT_TRUE(test::close_as(host(g.k), r.k, dt, "dk"));
  EXPECT_TRUE(test::close_as(host(g.v), r.v, dt, "dv"));
}

TEST(AttentionCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const std::vector<Case> cases = {
      {2, 257, 8, 2, 128, 128},                              // GQA, S not a tile multiple
      {2, 257, 8, 2, 192, 128},                              // DeepSeek MLA head dims
      {1, 45, 3, 1, 5, 3},                                   // MQA, tiny odd dims
      {1, 65, 2, 2, 256, 256},                               // the largest head dims
      {3, 1, 4, 2, 64, 32},                                  // S = 1
      {2, 70, 4, 2, 96, 72, false},                          // full attention
      {2, 67, 6, 3, 40, 130, true, AttentionLayout::sbhd},   // Megatron's layout
      {1, 33, 4, 4, 129, 33, false, AttentionLayout::sbhd},  // MHA, dims just past a bucket
  };
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16})
    for (const Case& c : cases) check_case(c, dt, s += 4);
}

TEST(AttentionCuda, EmptyInputs) {
  MOE_REQUIRE_GPU();
  for (const Shape& qs : {Shape{0, 5, 4, 8}, Shape{2, 0, 4, 8}}) {
    const Tensor q = Tensor::empty(qs, DType::bf16, Device::cuda());
    const Tensor k = Tensor::empty({qs[0], qs[1], 2, 8}, DType::bf16, Device::cuda());
    const Tensor v = Tensor::empty({qs[0], qs[1], 2, 3}, DType::bf16, Device::cuda());
    const AttentionOutput r = attention_forward(q, k, v);
    EXPECT_EQ(r.out.shape(), (Shape{qs[0], qs[1], 4, 3}));
    EXPECT_EQ(r.lse.shape(), (Shape{qs[0], 4, qs[1]}));
    const AttentionGrads g = attention_backward(r.out, q, k, v, r.out, r.lse);
    EXPECT_EQ(g.q.shape(), q.shape());
    EXPECT_EQ(g.k.shape(), k.shape());
    EXPECT_EQ(g.v.shape(), v.shape());
  }
}

// Scores of order 1e4: finite outputs and gradients, lse matching the CPU (relative).
TEST(AttentionCuda, LargeScoresStayFinite) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Input q = test::paired_input({2, 100, 4, 64}, DType::f32, seed, false, 1e4);
  const Input k = test::paired_input({2, 100, 2, 64}, DType::f32, seed + 1);
  const Input v = test::paired_input({2, 100, 2, 32}, DType::f32, seed + 2);
  const AttentionOutput got = attention_forward(q.dev, k.dev, v.dev);
  const AttentionOutput want = attention_forward(q.ref, k.ref, v.ref);
  for (double x : host(got.out).to_double_vector()) ASSERT_TRUE(std::isfinite(x));
  EXPECT_TRUE(test::close(host(got.lse), want.lse, 1e-5, "lse"));
  const AttentionGrads g = attention_backward(got.out, q.dev, k.dev, v.dev, got.out, got.lse);
  for (const Tensor* t : {&g.q, &g.k, &g.v})
    for (double x : host(*t).to_double_vector()) ASSERT_TRUE(std::isfinite(x));
}

// No atomics: two runs give bitwise the same gradients.
TEST(AttentionCuda, BackwardIsDeterministic) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Input q = test::paired_input({2, 129, 8, 64}, DType::bf16, seed);
  const Input k = test::paired_input({2, 129, 1, 64}, DType::bf16, seed + 1);
  const Input v = test::paired_input({2, 129, 1, 64}, DType::bf16, seed + 2);
  const Input dout = test::paired_input({2, 129, 8, 64}, DType::bf16, seed + 3);
  AttentionOptions options;
  options.backend = AttentionBackend::native;
  const AttentionOutput f = attention_forward(q.dev, k.dev, v.dev, options);
  const AttentionGrads a = attention_backward(dout.dev, q.dev, k.dev, v.dev, f.out, f.lse, options);
  const AttentionGrads b = attention_backward(dout.dev, q.dev, k.dev, v.dev, f.out, f.lse, options);
  EXPECT_TRUE(test::equal(host(a.q), host(b.q)));
  EXPECT_TRUE(test::equal(host(a.k), host(b.k)));
  EXPECT_TRUE(test::equal(host(a.v), host(b.v)));
}

TEST(AttentionCuda, RejectsUnsupported) {
  MOE_REQUIRE_GPU();
  const auto t = [](Shape s, DType dt) { return Tensor::zeros(s, dt, Device::cuda()); };
  // D > 256.
  EXPECT_THROW(attention_forward(t({1, 4, 2, 288}, DType::bf16), t({1, 4, 2, 288}, DType::bf16),
                                 t({1, 4, 2, 8}, DType::bf16)),
               moe::Error);
  // f64 is CPU-only.
  EXPECT_THROW(attention_forward(t({1, 4, 2, 8}, DType::f64), t({1, 4, 2, 8}, DType::f64),
                                 t({1, 4, 2, 8}, DType::f64)),
               moe::Error);
  // Mixed devices.
  EXPECT_THROW(
      attention_forward(t({1, 4, 2, 8}, DType::f32), Tensor::zeros({1, 4, 2, 8}, DType::f32),
                        t({1, 4, 2, 8}, DType::f32)),
      moe::Error);
}

}  // namespace
}  // namespace moe::ops
