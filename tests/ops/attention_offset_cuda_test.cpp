// CUDA attention with Sq != Sk and an offset causal mask (AttentionOptions::causal_offset)
// against the CPU reference: the native kernels in f32 (f32 tolerance) and bf16 (against the CPU
// f32 reference on the same bf16-rounded inputs, bf16 tolerance), forward (out, lse) and backward
// (dq, dk, dv), on sizes that cross the 32-row tiles with offsets that are not tile multiples
// (the block-skipping bounds), clipped rows, Sq > Sk, keys no row sees, full attention, GQA,
// D != Dv and both layouts; a query chunk equal to rows of the whole-sequence call on the GPU;
// attention dropout of a chunk against the CPU; and the cuDNN path (where the installed cuDNN
// runs the offset band: against the CPU; otherwise the automatic fallback).
#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/ops/attention.h"
#include "ops/dropout_testing.h"

namespace moe::ops {
namespace {

using test::host;
using Input = test::PairedInput;

struct Case {
  int64_t batch, q_seq, kv_seq, q_heads, kv_heads, head_dim, v_head_dim;
  int64_t offset;
  bool causal = true;
  AttentionLayout layout = AttentionLayout::bshd;
};

std::ostream& operator<<(std::ostream& out, const Case& c) {
  return out << "B=" << c.batch << " Sq=" << c.q_seq << " Sk=" << c.kv_seq << " Hq=" << c.q_heads
             << " Hkv=" << c.kv_heads << " D=" << c.head_dim << " Dv=" << c.v_head_dim
             << (c.causal ? " causal offset " + std::to_string(c.offset) : std::string(" full"))
             << (c.layout == AttentionLayout::bshd ? " bshd" : " sbhd");
}

Shape dims(const Case& c, int64_t seq, int64_t heads, int64_t dim) {
  if (c.layout == AttentionLayout::bshd) return {c.batch, seq, heads, dim};
  return {seq, c.batch, heads, dim};
}

AttentionOptions options_for(const Case& c, AttentionBackend backend) {
  AttentionOptions o;
  o.causal = c.causal;
  o.causal_offset = c.causal ? c.offset : 0;
  o.layout = c.layout;
  o.backend = backend;
  return o;
}

struct Inputs {
  Input q, k, v, dout;
};

Inputs inputs_for(const Case& c, DType dt, uint64_t seed) {
  return {test::paired_input(dims(c, c.q_seq, c.q_heads, c.head_dim), dt, seed),
          test::paired_input(dims(c, c.kv_seq, c.kv_heads, c.head_dim), dt, seed + 1),
          test::paired_input(dims(c, c.kv_seq, c.kv_heads, c.v_head_dim), dt, seed + 2),
          test::paired_input(dims(c, c.q_seq, c.q_heads, c.v_head_dim), dt, seed + 3)};
}

// `options` on the GPU against the CPU reference (the backward of both sees the GPU's out, lse).
void check_against_cpu(const Inputs& in, const AttentionOptions& options, DType dt) {
  const AttentionOutput got = attention_forward(in.q.dev, in.k.dev, in.v.dev, options);
  const AttentionOutput want = attention_forward(in.q.ref, in.k.ref, in.v.ref, options);
  ASSERT_TRUE(got.out.is_cuda());
  EXPECT_TRUE(test::close_as(host(got.out), want.out, dt, "out"));
  EXPECT_TRUE(test::close_as(host(got.lse), want.lse, DType::f32, "lse"));
  const AttentionGrads g =
      attention_backward(in.dout.dev, in.q.dev, in.k.dev, in.v.dev, got.out, got.lse, options);
  const AttentionGrads r = attention_backward(in.dout.ref, in.q.ref, in.k.ref, in.v.ref,
                                              host(got.out).to(DType::f32), host(got.lse), options);
  EXPECT_TRUE(test::close_as(host(g.q), r.q, dt, "dq"));
  EXPECT_TRUE(test::close_as(host(g.k), r.k, dt, "dk"));
  EXPECT_TRUE(test::close_as(host(g.v), r.v, dt, "dv"));
}

const std::vector<Case>& native_cases() {
  using L = AttentionLayout;
  static const std::vector<Case> cases = {
      {2, 5, 12, 4, 2, 5, 3, 7},              // the CPU test's odd sizes
      {2, 3, 3, 4, 2, 5, 3, 0},               // Sq = Sk, no offset
      {2, 4, 9, 4, 2, 5, 3, 2},               // nothing clipped, unseen keys
      {2, 5, 11, 4, 2, 5, 3, 0, false},       // full, Sq != Sk
      {2, 40, 100, 8, 2, 128, 128, 60},       // a middle chunk: offset not a tile multiple
      {1, 33, 257, 4, 1, 64, 32, 224},        // bottom-right aligned, MQA
      {2, 70, 50, 4, 2, 96, 72, 5},           // Sq > Sk: rows 45.. see every key
      {2, 64, 256, 6, 3, 192, 128, 96},       // MLA dims, tile-aligned chunk
      {1, 45, 130, 4, 4, 40, 130, 0, false},  // full, Dv past a bucket
      {2, 67, 200, 6, 3, 40, 128, 100, true, L::sbhd},  // Megatron's layout
      {1, 31, 90, 2, 1, 33, 17, 13, true, L::sbhd},     // partial tiles everywhere
      {1, 50, 300, 2, 2, 64, 64, 17},                   // keys 67.. seen by no row: dk = dv = 0
  };
  return cases;
}

TEST(AttentionOffsetCuda, NativeMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16})
    for (const Case& c : native_cases()) {
      SCOPED_TRACE(testing::Message() << c << " " << dtype_name(dt));
      check_against_cpu(inputs_for(c, dt, s += 4), options_for(c, AttentionBackend::native), dt);
    }
}

// Queries [o, o + Sq) of a sequence of T over all its keys with causal_offset o: the rows of the
// whole-sequence call on the GPU (f32; the dk, dv of the whole call whose other rows get zero
// dout), and the offset matters (the plain mask gives other rows).
TEST(AttentionOffsetCuda, ChunkEqualsRowsOfTheWholeSequence) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t B = 2, T = 150, Sq = 45, o = 83, Hq = 4, Hkv = 2, D = 64, Dv = 48;
  const Tensor qw = test::random_normal({B, T, Hq, D}, DType::f32, seed, Device::cuda());
  const Tensor k = test::random_normal({B, T, Hkv, D}, DType::f32, seed + 1, Device::cuda());
  const Tensor v = test::random_normal({B, T, Hkv, Dv}, DType::f32, seed + 2, Device::cuda());
  const Tensor dc = test::random_normal({B, Sq, Hq, Dv}, DType::f32, seed + 3);
  const Tensor dw = test::concat_dim({Tensor::zeros({B, o, Hq, Dv}, DType::f32), dc,
                                      Tensor::zeros({B, T - o - Sq, Hq, Dv}, DType::f32)},
                                     1);
  AttentionOptions whole;
  whole.backend = AttentionBackend::native;
  const AttentionOutput wf = attention_forward(qw, k, v, whole);
  const AttentionGrads wg = attention_backward(test::gpu(dw), qw, k, v, wf.out, wf.lse, whole);
  AttentionOptions chunk = whole;
  chunk.causal_offset = o;
  const Tensor qc = test::gpu(test::slice_dim(host(qw), 1, o, Sq));
  const AttentionOutput cf = attention_forward(qc, k, v, chunk);
  const AttentionGrads cg = attention_backward(test::gpu(dc), qc, k, v, cf.out, cf.lse, chunk);
  EXPECT_TRUE(
      test::close_as(host(cf.out), test::slice_dim(host(wf.out), 1, o, Sq), DType::f32, "out"));
  EXPECT_TRUE(
      test::close_as(host(cf.lse), test::slice_dim(host(wf.lse), 2, o, Sq), DType::f32, "lse"));
  EXPECT_TRUE(test::close_as(host(cg.q), test::slice_dim(host(wg.q), 1, o, Sq), DType::f32, "dq"));
  EXPECT_TRUE(test::close_as(host(cg.k), host(wg.k), DType::f32, "dk"));
  EXPECT_TRUE(test::close_as(host(cg.v), host(wg.v), DType::f32, "dv"));
  AttentionOptions ignored = chunk;
  ignored.causal_offset = 0;
  EXPECT_FALSE(test::close_as(host(attention_forward(qc, k, v, ignored).out),
                              test::slice_dim(host(wf.out), 1, o, Sq), DType::f32));
}

// Attention dropout of a chunk (query_offset, seq_total and the causal offset) on the native
// kernels: the CPU's masks.
TEST(AttentionOffsetCuda, DropoutChunkMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16})
    for (const Case& c : {Case{2, 40, 100, 4, 2, 64, 32, 60},
                          Case{1, 33, 70, 2, 1, 40, 24, 0, false, AttentionLayout::sbhd}}) {
      SCOPED_TRACE(testing::Message() << c << " " << dtype_name(dt));
      AttentionOptions o = options_for(c, AttentionBackend::automatic);
      o.dropout.p = 0.2;
      o.dropout.key = dropout_key(s += 4, 1, DropoutSite::attention_probs);
      o.dropout.first_sample = 9;
      o.dropout.query_offset = c.offset;
      o.dropout.seq_total = c.kv_seq;
      check_against_cpu(inputs_for(c, dt, s), o, dt);
    }
}

// bf16 with head dims cuDNN takes: through cuDNN where it runs the band (against the CPU and the
// native kernels), else the automatic fallback to the native kernels (against the CPU).
TEST(AttentionOffsetCuda, CudnnOrFallbackMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  using L = AttentionLayout;
  const std::vector<Case> cases = {
      {2, 64, 256, 8, 2, 128, 128, 192},               // the last chunk, tile multiples
      {2, 40, 100, 8, 2, 128, 128, 60},                // a middle chunk, odd sizes
      {2, 70, 50, 4, 2, 64, 64, 5},                    // Sq > Sk, clipped rows
      {1, 45, 130, 4, 4, 64, 64, 0, false},            // full, Sq != Sk
      {2, 67, 200, 6, 3, 64, 64, 100, true, L::sbhd},  // Megatron's layout
  };
  uint64_t s = seed;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << c);
    const Inputs in = inputs_for(c, DType::bf16, s += 4);
    const AttentionOptions cudnn = options_for(c, AttentionBackend::cudnn);
    std::string reason;
    if (attention_backend_for(in.q.dev, in.k.dev, in.v.dev, cudnn, &reason) !=
        AttentionBackend::cudnn) {
      std::cout << "[   NOTE   ] cuDNN cannot run " << c << ": " << reason << "\n";
      EXPECT_FALSE(reason.empty());
      EXPECT_THROW(attention_forward(in.q.dev, in.k.dev, in.v.dev, cudnn), moe::Error);
      check_against_cpu(in, options_for(c, AttentionBackend::automatic), DType::bf16);
      continue;
    }
    check_against_cpu(in, cudnn, DType::bf16);
    // cuDNN against the native kernels on the same inputs.
    const AttentionOptions native = options_for(c, AttentionBackend::native);
    const AttentionOutput a = attention_forward(in.q.dev, in.k.dev, in.v.dev, cudnn);
    const AttentionOutput n = attention_forward(in.q.dev, in.k.dev, in.v.dev, native);
    EXPECT_TRUE(test::close_as(host(a.out).to(DType::f32), host(n.out).to(DType::f32), DType::bf16,
                               "out vs native"));
    EXPECT_TRUE(test::close(host(a.lse), host(n.lse), 1e-4, "lse vs native"));
  }
}

TEST(AttentionOffsetCuda, EmptyQueriesAndMissingKeys) {
  MOE_REQUIRE_GPU();
  const auto t = [](Shape s) { return Tensor::zeros(s, DType::bf16, Device::cuda()); };
  AttentionOptions o;
  o.causal_offset = 3;
  const Tensor k = test::random_normal({2, 9, 2, 64}, DType::bf16, 1, Device::cuda());
  const Tensor q0 = t({2, 0, 4, 64});
  const AttentionOutput e = attention_forward(q0, k, k, o);
  EXPECT_EQ(e.lse.shape(), (Shape{2, 4, 0}));
  const AttentionGrads g = attention_backward(e.out, q0, k, k, e.out, e.lse, o);
  EXPECT_TRUE(test::equal(host(g.k), Tensor::zeros({2, 9, 2, 64}, DType::bf16), "dk"));
  EXPECT_TRUE(test::equal(host(g.v), Tensor::zeros({2, 9, 2, 64}, DType::bf16), "dv"));
  EXPECT_THROW(attention_forward(t({2, 5, 4, 64}), t({2, 0, 2, 64}), t({2, 0, 2, 64}), o),
               moe::Error);
}

}  // namespace
}  // namespace moe::ops
