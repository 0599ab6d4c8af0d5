// CUDA dropout against the CPU reference: bitwise-equal masks and outputs (the same Philox bits,
// the same f32 / f64 product rounded once) on odd sizes, every dtype, misaligned views, in place
// and out of place, p = 1 and p = 0 (the input itself, no launch), blocks of a sequence (sequence
// parallelism); and attention dropout of the native kernels against the CPU reference (forward
// and backward), on blocks of heads and query / key chunks too, cuDNN falling back to them.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "common/check.h"
#include "moe/ops/attention.h"
#include "moe/ops/dropout.h"
#include "ops/dropout_testing.h"

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

// Sequence parallelism on the GPU: each block of [S, B, F] with its seq_offset / seq_total
// equals the CPU's bit for bit, and the blocks concatenated are the whole tensor's dropout.
TEST(DropoutCuda, SequenceBlocksEqualTheCpuAndTheWholeSequence) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    const int64_t S = 37, B = 3, F = 129;
    const test::PairedInput x = test::paired_input({S, B, F}, dt, ++s);
    const DropoutArgs whole_args = args_of(0.3, ++s, 1000003, DropoutSite::attention_output);
    const Tensor whole = host(dropout(x.dev, whole_args));
    std::vector<Tensor> outs, masks;
    int64_t offset = 0;
    for (int64_t size : {16, 21}) {
      DropoutArgs a = whole_args;
      a.seq_offset = offset;
      a.seq_total = S;
      const Tensor block = x.dev.rows(offset, size).clone();
      const Tensor out = host(dropout(block, a));
      EXPECT_TRUE(test::equal(out, dropout(host(block), a), "block vs CPU"));
      Tensor in_place = block.clone();
      dropout_(in_place, a);
      EXPECT_TRUE(test::equal(host(in_place), out, "in place"));
      const Tensor mask = host(dropout_mask(block.shape(), a, Device::cuda()));
      EXPECT_TRUE(test::equal(mask, dropout_mask(block.shape(), a, Device::cpu()), "mask"));
      outs.push_back(out);
      masks.push_back(mask);
      if (offset > 0) {
        DropoutArgs wrong = a;
        wrong.seq_offset = offset - 1;
        EXPECT_FALSE(test::equal(host(dropout(block, wrong)), out));
      }
      offset += size;
    }
    EXPECT_TRUE(test::equal(test::concat_dim(outs, 0), whole, "blocks vs whole"));
    EXPECT_TRUE(test::equal(test::concat_dim(masks, 0),
                            host(dropout_mask({S, B, F}, whole_args, Device::cuda())), "masks"));
  }
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

// Tensor parallelism on the GPU: the native kernels on blocks of heads (given head_offset /
// heads_total) match the CPU reference on the same blocks, and the blocks' out, lse, dq, dk, dv
// concatenated along heads are the all-heads call's bit for bit (the kernels treat every head,
// and every kv head's group, on its own). A wrong head offset does not match.
TEST(AttentionDropoutCuda, HeadBlocksMatchCpuAndTheAllHeadsCall) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  const int64_t B = 2, S = 77, Hq = 6, Hkv = 3, group = Hq / Hkv;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (bool causal : {true, false}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << (causal ? " causal" : " full"));
      const test::PairedInput q = test::paired_input({B, S, Hq, 64}, dt, ++s);
      const test::PairedInput k = test::paired_input({B, S, Hkv, 64}, dt, ++s);
      const test::PairedInput v = test::paired_input({B, S, Hkv, 48}, dt, ++s);
      const test::PairedInput dout = test::paired_input({B, S, Hq, 48}, dt, ++s);
      AttentionOptions o;
      o.causal = causal;
      o.backend = AttentionBackend::native;
      o.dropout = args_of(0.2, ++s, 31, DropoutSite::attention_probs);
      const AttentionOutput all = attention_forward(q.dev, k.dev, v.dev, o);
      const AttentionGrads all_g =
          attention_backward(dout.dev, q.dev, k.dev, v.dev, all.out, all.lse, o);
      std::vector<Tensor> out, lse, dq, dk, dv;
      for (auto [h0, n] : {std::pair<int64_t, int64_t>{0, 2}, {2, 4}}) {
        SCOPED_TRACE(testing::Message() << "heads " << h0 << ".." << h0 + n);
        AttentionOptions ob = o;
        ob.dropout.head_offset = h0;
        ob.dropout.heads_total = Hq;
        // The block on the GPU (its own tensors, as a rank holds them) and its CPU reference.
        const Tensor qc = test::slice_dim(q.ref, 2, h0, n),
                     dc = test::slice_dim(dout.ref, 2, h0, n);
        const Tensor kc = test::slice_dim(k.ref, 2, h0 / group, n / group);
        const Tensor vc = test::slice_dim(v.ref, 2, h0 / group, n / group);
        const Tensor qg = gpu(qc.to(dt)), dg = gpu(dc.to(dt)), kg = gpu(kc.to(dt)),
                     vg = gpu(vc.to(dt));
        const AttentionOutput g = attention_forward(qg, kg, vg, ob);
        const AttentionOutput c = attention_forward(qc, kc, vc, ob);
        EXPECT_TRUE(test::close_as(host(g.out), c.out, dt, "out"));
        EXPECT_TRUE(test::close_as(host(g.lse), c.lse, test::reference_dtype(dt), "lse"));
        const AttentionGrads gg = attention_backward(dg, qg, kg, vg, g.out, g.lse, ob);
        const AttentionGrads cg = attention_backward(dc, qc, kc, vc, c.out, c.lse, ob);
        EXPECT_TRUE(test::close_as(host(gg.q), cg.q, dt, "dq"));
        EXPECT_TRUE(test::close_as(host(gg.k), cg.k, dt, "dk"));
        EXPECT_TRUE(test::close_as(host(gg.v), cg.v, dt, "dv"));
        out.push_back(host(g.out));
        lse.push_back(host(g.lse));
        dq.push_back(host(gg.q));
        dk.push_back(host(gg.k));
        dv.push_back(host(gg.v));
        if (h0 > 0) {
          AttentionOptions wrong = ob;
          wrong.dropout.head_offset = 0;
          EXPECT_FALSE(test::close_as(host(attention_forward(qg, kg, vg, wrong).out), c.out, dt));
        }
      }
      EXPECT_TRUE(test::equal(test::concat_dim(out, 2), host(all.out), "out"));
      EXPECT_TRUE(test::equal(test::concat_dim(lse, 1), host(all.lse), "lse"));
      EXPECT_TRUE(test::equal(test::concat_dim(dq, 2), host(all_g.q), "dq"));
      EXPECT_TRUE(test::equal(test::concat_dim(dk, 2), host(all_g.k), "dk"));
      EXPECT_TRUE(test::equal(test::concat_dim(dv, 2), host(all_g.v), "dv"));
    }
  }
}

// Context parallelism's chunks on the GPU: queries and keys at offsets of a longer sequence
// (query_offset, key_offset, seq_total) match the CPU reference with the same offsets, forward
// and backward, in both layouts; swapped offsets do not.
TEST(AttentionDropoutCuda, QueryAndKeyChunksMatchCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  const int64_t B = 2, L = 77, T = 300;
  struct Chunks {
    int64_t qo, ko;
    bool causal;
  };
  for (DType dt : {DType::f32, DType::bf16}) {
    for (AttentionLayout layout : {AttentionLayout::bshd, AttentionLayout::sbhd}) {
      for (const Chunks& ch : {Chunks{100, 100, true}, Chunks{200, 30, false}}) {
        SCOPED_TRACE(testing::Message()
                     << dtype_name(dt) << (layout == AttentionLayout::bshd ? " bshd" : " sbhd")
                     << " queries at " << ch.qo << ", keys at " << ch.ko);
        const Shape lead = layout == AttentionLayout::bshd ? Shape{B, L} : Shape{L, B};
        const test::PairedInput q = test::paired_input({lead[0], lead[1], 4, 64}, dt, ++s);
        const test::PairedInput k = test::paired_input({lead[0], lead[1], 2, 64}, dt, ++s);
        const test::PairedInput v = test::paired_input({lead[0], lead[1], 2, 64}, dt, ++s);
        const test::PairedInput dout = test::paired_input({lead[0], lead[1], 4, 64}, dt, ++s);
        AttentionOptions o;
        o.causal = ch.causal;
        o.layout = layout;
        o.backend = AttentionBackend::native;
        o.dropout = args_of(0.25, ++s, 5, DropoutSite::attention_probs);
        o.dropout.query_offset = ch.qo;
        o.dropout.key_offset = ch.ko;
        o.dropout.seq_total = T;
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
        AttentionOptions wrong = o;
        wrong.dropout.query_offset = ch.qo + 1;
        EXPECT_FALSE(
            test::close_as(host(attention_forward(q.dev, k.dev, v.dev, wrong).out), c.out, dt));
      }
    }
  }
}

}  // namespace
}  // namespace moe::ops
