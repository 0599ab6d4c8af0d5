// CUDA SwiGLU and sigmoid gate against the CPU reference on fresh random inputs: f32, bf16 (the
// CUDA bf16 result against the CPU f32 reference on the same bf16-rounded inputs), f16, f64;
// odd widths (F = 259, scalar path), wide rows (F = 2048: 16-byte packs, several warps per row
// for the d_probs sum), misaligned views, with and without probs, zero rows.
#include <gtest/gtest.h>

#include "common/check.h"
#include "moe/ops/swiglu.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;

// The reference dtype for a kernel dtype: f32 for bf16/f16 (on the same rounded values).



TEST(SwigluCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (int64_t rows : {257, 0}) {
      for (int64_t ffn : {259, 2048, 8}) {
        for (bool misaligned : {false, true}) {
          for (bool with_probs : {true, false}) {
            SCOPED_TRACE(testing::Message() << dtype_name(dt) << " R=" << rows << " F=" << ffn
                                            << (misaligned ? " misaligned" : "")
                                            << (with_probs ? " probs" : " no probs"));
            const test::PairedInput fc1 = test::paired_input({rows, 2 * ffn}, dt, ++s, misaligned, 2.0);
            const test::PairedInput dh = test::paired_input({rows, ffn}, dt, ++s, misaligned);
            const Tensor probs =
                with_probs ? test::random_uniform({rows}, DType::f32, ++s, 0.0, 1.0) : Tensor();
            const Tensor h = swiglu_forward(fc1.dev, gpu(probs));
            EXPECT_TRUE(h.is_cuda());
            EXPECT_EQ(h.dtype(), dt);
            EXPECT_TRUE(test::close_as(host(h), swiglu_forward(fc1.ref, probs), dt, "h"));
            const SwigluGrads g = swiglu_backward(dh.dev, fc1.dev, gpu(probs));
            const SwigluGrads c = swiglu_backward(dh.ref, fc1.ref, probs);
            EXPECT_TRUE(test::close_as(host(g.fc1_out), c.fc1_out, dt, "d_fc1"));
            EXPECT_EQ(g.probs.defined(), with_probs);
            if (with_probs) {
              // Computed in fp32 from the same values; only the summation order differs.
              EXPECT_TRUE(test::close_as(host(g.probs), c.probs, test::reference_dtype(dt), "d_probs"));
            }
          }
        }
      }
    }
  }
}

TEST(SwigluCuda, F64Probs) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor fc1 = test::random_normal({33, 64}, DType::f64, seed);
  const Tensor dh = test::random_normal({33, 32}, DType::f64, seed + 1);
  const Tensor probs = test::random_uniform({33}, DType::f64, seed + 2, 0.0, 1.0);
  EXPECT_TRUE(test::close_as(host(swiglu_forward(gpu(fc1), gpu(probs))), swiglu_forward(fc1, probs),
                             DType::f64));
  const SwigluGrads g = swiglu_backward(gpu(dh), gpu(fc1), gpu(probs));
  const SwigluGrads c = swiglu_backward(dh, fc1, probs);
  EXPECT_TRUE(test::close_as(host(g.fc1_out), c.fc1_out, DType::f64));
  EXPECT_EQ(g.probs.dtype(), DType::f64);
  EXPECT_TRUE(test::close_as(host(g.probs), c.probs, DType::f64));
}

TEST(SigmoidGateCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (int64_t rows : {257, 0}) {
      for (int64_t hidden : {259, 4096}) {
        for (bool misaligned : {false, true}) {
          SCOPED_TRACE(testing::Message() << dtype_name(dt) << " T=" << rows << " H=" << hidden
                                          << (misaligned ? " misaligned" : ""));
          const test::PairedInput out = test::paired_input({rows, hidden}, dt, ++s, misaligned);
          const test::PairedInput gate = test::paired_input({rows, 1}, dt, ++s, false, 2.0);
          const test::PairedInput dy = test::paired_input({rows, hidden}, dt, ++s, misaligned);
          EXPECT_TRUE(test::close_as(host(sigmoid_gate_forward(out.dev, gate.dev)),
                                     sigmoid_gate_forward(out.ref, gate.ref), dt, "y"));
          const SigmoidGateGrads g = sigmoid_gate_backward(dy.dev, out.dev, gate.dev);
          const SigmoidGateGrads c = sigmoid_gate_backward(dy.ref, out.ref, gate.ref);
          EXPECT_TRUE(test::close_as(host(g.out), c.out, dt, "d_out"));
          EXPECT_TRUE(test::close_as(host(g.gate_logits), c.gate_logits, dt, "d_gate"));
        }
      }
    }
  }
}

}  // namespace
}  // namespace moe::ops
