// The cudnn attention backend (cuDNN's fused flash SDPA) in bf16: forward (out, lse) and
// backward (dq, dk, dv) against the CPU f32 reference on the same bf16-rounded inputs (bf16
// tolerance), and against the native CUDA kernels; a native forward feeding a cuDNN backward
// (the lse conventions agree); the shapes of attention_cuda_test.cpp that cuDNN can take (GQA
// with S = 257, MQA, S = 1, full attention, sbhd) -- D = 192 / Dv = 128 (MLA) and 256 / 256
// where the installed cuDNN supports them, else the automatic fallback to the native kernels;
// large scores; the deterministic backward; the graph cache; and the fallbacks and errors for
// problems cuDNN cannot take (f32, odd head dims, misaligned tensors, builds without cuDNN).
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/ops/attention.h"
#include "moe/ops/attention_cudnn.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;

#define MOE_REQUIRE_CUDNN()                \
  MOE_REQUIRE_GPU();                       \
  if (!detail::cudnn_attention_compiled()) \
  GTEST_SKIP() << "built without the cuDNN frontend (scripts/setup.sh, then re-run CMake)"

// lse is f32 on both sides and only the summation order (and cuDNN's exp2 with log2(e) folded
// into the scale) differs; a wrong convention (log2 units, unscaled scores) is off by far more.
constexpr double kLseTol = 1e-4;

struct Case {
  int64_t batch, seq, q_heads, kv_heads, head_dim, v_head_dim;
  bool causal = true;
  AttentionLayout layout = AttentionLayout::bshd;
  // Whether every cuDNN 9 on sm_80+ must run it (plain head dims); the others may fall back.
  bool required = true;
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

AttentionOptions options_for(const Case& c, AttentionBackend backend) {
  AttentionOptions options;
  options.causal = c.causal;
  options.layout = c.layout;
  options.backend = backend;
  return options;
}

void check_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << c);
  const Input q = test::paired_input(dims(c, c.q_heads, c.head_dim), DType::bf16, seed);
  const Input k = test::paired_input(dims(c, c.kv_heads, c.head_dim), DType::bf16, seed + 1);
  const Input v = test::paired_input(dims(c, c.kv_heads, c.v_head_dim), DType::bf16, seed + 2);
  const Input dout = test::paired_input(dims(c, c.q_heads, c.v_head_dim), DType::bf16, seed + 3);
  const AttentionOptions cudnn = options_for(c, AttentionBackend::cudnn);
  const AttentionOptions native = options_for(c, AttentionBackend::native);
  const AttentionOptions automatic = options_for(c, AttentionBackend::automatic);

  std::string reason;
  if (attention_backend_for(q.dev, k.dev, v.dev, cudnn, &reason) != AttentionBackend::cudnn) {
    if (c.required) ADD_FAILURE() << "cuDNN cannot run a plain problem: " << reason;
    std::cout << "[   NOTE   ] cuDNN cannot run " << c << ": " << reason << "\n";
    // The automatic backend still gives the right answer (through the native kernels, or
    // cuDNN for the pass it supports).
    const AttentionOutput got = attention_forward(q.dev, k.dev, v.dev, automatic);
    const AttentionOutput want = attention_forward(q.ref, k.ref, v.ref, automatic);
    EXPECT_TRUE(test::close_as(host(got.out), want.out, DType::bf16, "automatic out"));
    const AttentionGrads g =
        attention_backward(dout.dev, q.dev, k.dev, v.dev, got.out, got.lse, automatic);
    const AttentionGrads r = attention_backward(dout.ref, q.ref, k.ref, v.ref,
                                                host(got.out).to(DType::f32), host(got.lse));
    EXPECT_TRUE(test::close_as(host(g.q), r.q, DType::bf16, "automatic dq"));
    EXPECT_TRUE(test::close_as(host(g.k), r.k, DType::bf16, "automatic dk"));
    EXPECT_TRUE(test::close_as(host(g.v), r.v, DType::bf16, "automatic dv"));
    return;
  }
  EXPECT_EQ(attention_backend_for(q.dev, k.dev, v.dev, automatic), AttentionBackend::cudnn);

  // Forward: cuDNN against the CPU and against the native kernels.
  const AttentionOutput got = attention_forward(q.dev, k.dev, v.dev, cudnn);
  const AttentionOutput want = attention_forward(q.ref, k.ref, v.ref, cudnn);
  const AttentionOutput nat = attention_forward(q.dev, k.dev, v.dev, native);
  ASSERT_TRUE(got.out.is_cuda());
  EXPECT_EQ(got.out.dtype(), DType::bf16);
  EXPECT_EQ(got.lse.dtype(), DType::f32);
  EXPECT_TRUE(test::close_as(host(got.out), want.out, DType::bf16, "out vs cpu"));
  EXPECT_TRUE(test::close(host(got.lse), want.lse, kLseTol, "lse vs cpu"));
  EXPECT_TRUE(test::close_as(host(got.out).to(DType::f32), host(nat.out).to(DType::f32),
                             DType::bf16, "out vs native"));
  EXPECT_TRUE(test::close(host(got.lse), host(nat.lse), kLseTol, "lse vs native"));

  // Backward: every device sees cuDNN's out and lse.
  const Tensor out_ref = host(got.out).to(DType::f32);
  const AttentionGrads g =
      attention_backward(dout.dev, q.dev, k.dev, v.dev, got.out, got.lse, cudnn);
  const AttentionGrads r =
      attention_backward(dout.ref, q.ref, k.ref, v.ref, out_ref, host(got.lse), cudnn);
  const AttentionGrads n =
      attention_backward(dout.dev, q.dev, k.dev, v.dev, got.out, got.lse, native);
  EXPECT_EQ(g.q.dtype(), DType::bf16);
  EXPECT_TRUE(test::close_as(host(g.q), r.q, DType::bf16, "dq vs cpu"));
  EXPECT_TRUE(test::close_as(host(g.k), r.k, DType::bf16, "dk vs cpu"));
  EXPECT_TRUE(test::close_as(host(g.v), r.v, DType::bf16, "dv vs cpu"));
  EXPECT_TRUE(test::close_as(host(g.q).to(DType::f32), host(n.q).to(DType::f32), DType::bf16,
                             "dq vs native"));
  EXPECT_TRUE(test::close_as(host(g.k).to(DType::f32), host(n.k).to(DType::f32), DType::bf16,
                             "dk vs native"));
  EXPECT_TRUE(test::close_as(host(g.v).to(DType::f32), host(n.v).to(DType::f32), DType::bf16,
                             "dv vs native"));

  // The native forward's lse drives the cuDNN backward: the two lse conventions are one.
  const AttentionGrads mixed =
      attention_backward(dout.dev, q.dev, k.dev, v.dev, nat.out, nat.lse, cudnn);
  const AttentionGrads mixed_ref = attention_backward(
      dout.ref, q.ref, k.ref, v.ref, host(nat.out).to(DType::f32), host(nat.lse), cudnn);
  EXPECT_TRUE(test::close_as(host(mixed.q), mixed_ref.q, DType::bf16, "dq after native fwd"));
  EXPECT_TRUE(test::close_as(host(mixed.k), mixed_ref.k, DType::bf16, "dk after native fwd"));
  EXPECT_TRUE(test::close_as(host(mixed.v), mixed_ref.v, DType::bf16, "dv after native fwd"));
}

TEST(AttentionCudnn, MatchesCpuAndNative) {
  MOE_REQUIRE_CUDNN();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const std::vector<Case> cases = {
      {2, 257, 8, 2, 128, 128},                                      // GQA, S not a tile multiple
      {1, 45, 4, 1, 64, 64},                                         // MQA
      {3, 1, 4, 2, 64, 64, true, AttentionLayout::bshd, false},      // S = 1
      {2, 70, 4, 2, 128, 128, false},                                // full attention
      {2, 67, 6, 3, 64, 64, true, AttentionLayout::sbhd},            // Megatron's layout
      {1, 33, 4, 4, 128, 128, false, AttentionLayout::sbhd},         // MHA, full, sbhd
      {2, 257, 8, 2, 192, 128, true, AttentionLayout::bshd, false},  // DeepSeek MLA head dims
      {1, 65, 2, 2, 256, 256, true, AttentionLayout::bshd, false},   // the largest head dims
      {2, 70, 4, 2, 96, 72, false, AttentionLayout::bshd, false},    // D != Dv, both x8
      {2, 67, 6, 3, 40, 128, true, AttentionLayout::sbhd, false},    // small D, sbhd
  };
  uint64_t s = seed;
  for (const Case& c : cases) check_case(c, s += 4);
}

// Scores of order 1e3 (q ~ 1e3, k ~ 1, scale 1/8, D = 64): finite outputs and gradients, lse
// and out matching the CPU.
TEST(AttentionCudnn, LargeScoresStayFinite) {
  MOE_REQUIRE_CUDNN();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Input q = test::paired_input({2, 100, 4, 64}, DType::bf16, seed, false, 1e3);
  const Input k = test::paired_input({2, 100, 2, 64}, DType::bf16, seed + 1);
  const Input v = test::paired_input({2, 100, 2, 64}, DType::bf16, seed + 2);
  AttentionOptions options;
  options.backend = AttentionBackend::cudnn;
  const AttentionOutput got = attention_forward(q.dev, k.dev, v.dev, options);
  const AttentionOutput want = attention_forward(q.ref, k.ref, v.ref, options);
  for (double x : host(got.out).to_double_vector()) ASSERT_TRUE(std::isfinite(x));
  EXPECT_TRUE(test::close(host(got.lse), want.lse, kLseTol, "lse"));
  EXPECT_TRUE(test::close_as(host(got.out), want.out, DType::bf16, "out"));
  const AttentionGrads g =
      attention_backward(got.out, q.dev, k.dev, v.dev, got.out, got.lse, options);
  for (const Tensor* t : {&g.q, &g.k, &g.v})
    for (double x : host(*t).to_double_vector()) ASSERT_TRUE(std::isfinite(x));
}

// options.deterministic: two backward runs give bitwise the same gradients (cuDNN's
// deterministic algorithm, or the native kernels where the installed cuDNN has none).
TEST(AttentionCudnn, DeterministicBackward) {
  MOE_REQUIRE_CUDNN();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Input q = test::paired_input({2, 129, 8, 64}, DType::bf16, seed);
  const Input k = test::paired_input({2, 129, 1, 64}, DType::bf16, seed + 1);
  const Input v = test::paired_input({2, 129, 1, 64}, DType::bf16, seed + 2);
  const Input dout = test::paired_input({2, 129, 8, 64}, DType::bf16, seed + 3);
  AttentionOptions options;
  options.deterministic = true;
  std::string reason;
  if (attention_backend_for(q.dev, k.dev, v.dev, options, &reason) != AttentionBackend::cudnn)
    std::cout << "[   NOTE   ] no deterministic cuDNN backward here: " << reason << "\n";
  const AttentionOutput f = attention_forward(q.dev, k.dev, v.dev, options);
  const AttentionGrads a = attention_backward(dout.dev, q.dev, k.dev, v.dev, f.out, f.lse, options);
  const AttentionGrads b = attention_backward(dout.dev, q.dev, k.dev, v.dev, f.out, f.lse, options);
  EXPECT_TRUE(test::equal(host(a.q), host(b.q)));
  EXPECT_TRUE(test::equal(host(a.k), host(b.k)));
  EXPECT_TRUE(test::equal(host(a.v), host(b.v)));
  const AttentionGrads r =
      attention_backward(dout.ref, q.ref, k.ref, v.ref, host(f.out).to(DType::f32), host(f.lse));
  EXPECT_TRUE(test::close_as(host(a.q), r.q, DType::bf16, "dq"));
  EXPECT_TRUE(test::close_as(host(a.k), r.k, DType::bf16, "dk"));
  EXPECT_TRUE(test::close_as(host(a.v), r.v, DType::bf16, "dv"));
}

// One graph per problem and pass, built on first use: the same problem again builds nothing,
// another scale (baked into the graph) builds anew.
TEST(AttentionCudnn, GraphsAreCachedPerProblem) {
  MOE_REQUIRE_CUDNN();
  const uint64_t seed = test::fresh_seed();
  const Input q = test::paired_input({1, 77, 4, 64}, DType::bf16, seed);
  const Input k = test::paired_input({1, 77, 2, 64}, DType::bf16, seed + 1);
  const Input v = test::paired_input({1, 77, 2, 64}, DType::bf16, seed + 2);
  AttentionOptions options;
  options.backend = AttentionBackend::cudnn;
  options.softmax_scale = 0.0771;  // a scale no other test uses: this thread's first build
  const auto step = [&] {
    const AttentionOutput f = attention_forward(q.dev, k.dev, v.dev, options);
    (void)attention_backward(f.out, q.dev, k.dev, v.dev, f.out, f.lse, options);
  };
  const int64_t before = detail::cudnn_attention_graphs_built();
  step();
  const int64_t first = detail::cudnn_attention_graphs_built();
  EXPECT_EQ(first - before, 2);  // forward and backward
  step();
  EXPECT_EQ(detail::cudnn_attention_graphs_built(), first);
  options.softmax_scale = 0.0772;
  step();
  EXPECT_EQ(detail::cudnn_attention_graphs_built(), first + 2);
}

// What cuDNN cannot take: an explicit cudnn request throws, naming why; automatic runs the
// native kernels and matches the CPU.
TEST(AttentionCudnn, UnsupportedProblemsFallBackOrThrow) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  AttentionOptions cudnn;
  cudnn.backend = AttentionBackend::cudnn;
  const auto check_fallback = [&](const Input& q, const Input& k, const Input& v, DType dt,
                                  const char* what) {
    SCOPED_TRACE(what);
    std::string reason;
    EXPECT_EQ(attention_backend_for(q.dev, k.dev, v.dev, cudnn, &reason), AttentionBackend::native);
    EXPECT_FALSE(reason.empty());
    EXPECT_THROW(attention_forward(q.dev, k.dev, v.dev, cudnn), moe::Error);
    const AttentionOutput got = attention_forward(q.dev, k.dev, v.dev);  // automatic
    const AttentionOutput want = attention_forward(q.ref, k.ref, v.ref);
    EXPECT_TRUE(test::close_as(host(got.out), want.out, dt, "out"));
    EXPECT_THROW(attention_backward(got.out, q.dev, k.dev, v.dev, got.out, got.lse, cudnn),
                 moe::Error);
  };
  // f32: cuDNN's flash kernels are 16-bit.
  check_fallback(test::paired_input({1, 40, 4, 64}, DType::f32, seed, false, 1.0),
                 test::paired_input({1, 40, 2, 64}, DType::f32, seed + 1, false, 1.0),
                 test::paired_input({1, 40, 2, 64}, DType::f32, seed + 2, false, 1.0), DType::f32,
                 "f32");
  // Head dims that are not multiples of 8.
  check_fallback(test::paired_input({1, 45, 3, 5}, DType::bf16, seed + 3),
                 test::paired_input({1, 45, 1, 5}, DType::bf16, seed + 4),
                 test::paired_input({1, 45, 1, 3}, DType::bf16, seed + 5), DType::bf16,
                 "odd head dims");
  // q two bytes past a 16-byte boundary (a view into a larger buffer).
  const Shape qs{1, 40, 4, 64};
  const Tensor buffer =
      test::random_normal({1 + 40 * 4 * 64}, DType::f32, seed + 6).to(DType::bf16);
  Input q_off;
  q_off.dev = gpu(buffer).rows(1, 40 * 4 * 64).reshape(qs);
  q_off.ref = host(q_off.dev).to(DType::f32);
  check_fallback(q_off, test::paired_input({1, 40, 2, 64}, DType::bf16, seed + 7),
                 test::paired_input({1, 40, 2, 64}, DType::bf16, seed + 8), DType::bf16,
                 "misaligned q");
}

TEST(AttentionCudnn, EmptyInputs) {
  MOE_REQUIRE_GPU();
  AttentionOptions options;
  options.backend = AttentionBackend::cudnn;
  for (const Shape& qs : {Shape{0, 5, 4, 64}, Shape{2, 0, 4, 64}}) {
    const Tensor q = Tensor::empty(qs, DType::bf16, Device::cuda());
    const Tensor k = Tensor::empty({qs[0], qs[1], 2, 64}, DType::bf16, Device::cuda());
    const Tensor v = Tensor::empty({qs[0], qs[1], 2, 64}, DType::bf16, Device::cuda());
    const AttentionOutput r = attention_forward(q, k, v, options);
    EXPECT_EQ(r.out.shape(), (Shape{qs[0], qs[1], 4, 64}));
    EXPECT_EQ(r.lse.shape(), (Shape{qs[0], 4, qs[1]}));
    const AttentionGrads g = attention_backward(r.out, q, k, v, r.out, r.lse, options);
    EXPECT_EQ(g.q.shape(), q.shape());
    EXPECT_EQ(g.k.shape(), k.shape());
    EXPECT_EQ(g.v.shape(), v.shape());
  }
}

}  // namespace
}  // namespace moe::ops
