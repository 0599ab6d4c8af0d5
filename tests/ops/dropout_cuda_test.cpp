// CUDA dropout against the CPU reference: bitwise-equal masks and outputs (the same Philox bits,
// the same f32 / f64 product rounded once) on odd sizes, every dtype, misaligned views, in place
// and out of place, p = 1 and p = 0 (the input itself, no launch); and attention dropout of the
// native kernels against the CPU reference (forward and backward), cuDNN falling back to them.
#include <gtest/gtest.h>

#include "common/check.h"
#include "moe/ops/attention.h"
#include "moe/ops/dropout.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;

DropoutArgs args_of(double p, uint64_t seed, int64_t first_sample, DropoutSite site) {
  DropoutArgs a;
  a.p = p;
  a.key = dropout_key(seed, 1, site);
  a.first_sample = first_sample;
  return a;
}

TEST(DropoutCuda, MasksAndOutputsEqualTheCpuBitwise) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (const Shape& shape : {Shape{257, 3, 129}, Shape{1, 1, 1}, Shape{13, 5, 4099}}) {
      for (bool misaligned : {false, true}) {
        for (double p : {0.1, 0.5, 1.0}) {
          SCOPED_TRACE(testing::Message() << dtype_name(dt) << " " << shape_str(shape) << " p=" << p
                                          << (misaligned ? " misaligned" : ""));
          const DropoutArgs a = args_of(p, ++s, 1000003, DropoutSite::mlp_output);
          EXPECT_TRUE(test::equal(host(dropout_mask(shape, a, Device::cuda())),
                                  dropout_mask(shape, a, Device::cpu())));
          const test::PairedInput x = test::paired_input(shape, dt, ++s, misaligned);
          const Tensor cpu_x = host(x.dev);  // the same values in the kernel dtype
          const Tensor expected = dropout(cpu_x, a);
          EXPECT_TRUE(test::equal(host(dropout(x.dev, a)), expected));
          Tensor in_place = x.dev.clone();
          dropout_(in_place, a);
          EXPECT_TRUE(test::equal(host(in_place), expected));
          EXPECT_TRUE(test::equal(host(dropout_backward(x.dev, a)), expected));
        }
      }
    }
  }
}

TEST(DropoutCuda, ZeroProbabilityReturnsTheInput) {
  MOE_REQUIRE_GPU();
  const Tensor x = gpu(test::random_normal({5, 2, 7}, DType::bf16, 3));
  EXPECT_EQ(dropout(x, args_of(0.0, 1, 0, DropoutSite::embedding)).raw(), x.raw());
  const Tensor empty = gpu(test::random_normal({0, 2, 7}, DType::f32, 3));
  EXPECT_EQ(dropout(empty, args_of(0.5, 1, 0, DropoutSite::embedding)).numel(), 0);
}

// Native kernels with attention dropout against the CPU reference on the same rounded inputs
// (S = 257 is not a multiple of the 32-row tile); the automatic and cudnn backends run the
// native kernels when p > 0, so their results are the native ones bit for bit.
TEST(AttentionDropoutCuda, MatchesCpuAndFallsBackFromCudnn) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (bool causal : {true, false}) {
      for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
        SCOPED_TRACE(testing::Message() << dtype_name(dt) << (causal ? " causal" : " full")
                                        << (layout == AttentionLayout::bshd ? " bshd" : " sbhd"));
        const int64_t B = 2, S = 257;
        const Shape lead = layout == AttentionLayout::bshd ? Shape{B, S} : Shape{S, B};
        const test::PairedInput q = test::paired_input({lead[0], lead[1], 8, 64}, dt, ++s);
        const test::PairedInput k = test::paired_input({lead[0], lead[1], 2, 64}, dt, ++s);
        const test::PairedInput v = test::paired_input({lead[0], lead[1], 2, 48}, dt, ++s);
        const test::PairedInput dout = test::paired_input({lead[0], lead[1], 8, 48}, dt, ++s);
        AttentionOptions o;
        o.causal = causal;
        o.layout = layout;
        o.backend = AttentionBackend::native;
        o.dropout = args_of(0.2, ++s, 77, DropoutSite::attention_probs);
        const AttentionOutput g = attention_forward(q.dev, k.dev, v.dev, o);
        const AttentionOutput c = attention_forward(q.ref, k.ref, v.ref, o);
        EXPECT_TRUE(test::close_as(host(g.out), c.out, dt, "out"));
        EXPECT_TRUE(test::close_as(host(g.lse), c.lse, test::reference_dtype(dt), "lse"));
        const AttentionGrads gg =
            attention_backward(dout.dev, q.dev, k.dev, v.dev, g.out, g.lse, o);
        const AttentionGrads cg =
            attention_backward(dout.ref, q.ref, k.ref, v.ref, c.out, c.lse, o);
        EXPECT_TRUE(test::close_as(host(gg.q), cg.q, dt, "dq"));
        EXPECT_TRUE(test::close_as(host(gg.k), cg.k, dt, "dk"));
        EXPECT_TRUE(test::close_as(host(gg.v), cg.v, dt, "dv"));
        for (AttentionBackend backend : {AttentionBackend::automatic, AttentionBackend::cudnn}) {
          AttentionOptions other = o;
          other.backend = backend;
          std::string reason;
          EXPECT_EQ(attention_backend_for(q.dev, k.dev, v.dev, other, &reason),
                    AttentionBackend::native);
          EXPECT_NE(reason.find("dropout"), std::string::npos) << reason;
          EXPECT_TRUE(
              test::equal(host(attention_forward(q.dev, k.dev, v.dev, other).out), host(g.out)));
        }
      }
    }
  }
}

// p = 0 with a key set: the native kernels' results equal those without dropout bit for bit.
TEST(AttentionDropoutCuda, ZeroProbabilityIsBitwiseNoDropout) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor q = gpu(test::random_normal({2, 65, 4, 32}, DType::bf16, seed));
  const Tensor k = gpu(test::random_normal({2, 65, 2, 32}, DType::bf16, seed + 1));
  const Tensor dout = gpu(test::random_normal({2, 65, 4, 32}, DType::bf16, seed + 2));
  AttentionOptions plain, zero;
  plain.backend = zero.backend = AttentionBackend::native;
  zero.dropout = args_of(0.0, seed, 3, DropoutSite::attention_probs);
  zero.dropout.key = 99;
  const AttentionOutput a = attention_forward(q, k, k, plain), b = attention_forward(q, k, k, zero);
  EXPECT_TRUE(test::equal(host(a.out), host(b.out)));
  const AttentionGrads ga = attention_backward(dout, q, k, k, a.out, a.lse, plain);
  const AttentionGrads gb = attention_backward(dout, q, k, k, b.out, b.lse, zero);
  EXPECT_TRUE(test::equal(host(ga.q), host(gb.q)));
  EXPECT_TRUE(test::equal(host(ga.k), host(gb.k)));
  EXPECT_TRUE(test::equal(host(ga.v), host(gb.v)));
}

}  // namespace
}  // namespace moe::ops
