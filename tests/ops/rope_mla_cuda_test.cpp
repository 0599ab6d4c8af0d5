// CUDA against the CPU reference for MLA's rotary pieces, fresh random inputs, odd sizes
// (257 tokens, 5 heads, dn 9, dr 6, dv 7), zero tokens: rotary with a feature offset (forward,
// backward; the three layouts; YaRN scale) and mla_expand_kv (forward, backward), in f32 and
// bf16 (against CPU f32 on the same bf16 values) and f64.
#include <gtest/gtest.h>

#include "common/check.h"
#include "moe/ops/rope.h"
#include "moe/ops/rope_mla.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;

TEST(RotaryFeatureOffsetCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  const int64_t dn = 9, dr = 6;
  for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
    const Tensor freq = inv_freq_tensor(rope_frequencies(dr, 10000.0),
                                        dt == DType::f64 ? DType::f64 : DType::f32, Device::cpu());
    for (RotaryLayout layout :
         {RotaryLayout::half, RotaryLayout::interleaved, RotaryLayout::interleaved_to_half}) {
      for (int64_t S : {257, 0}) {
        SCOPED_TRACE(testing::Message()
                     << dtype_name(dt) << " layout " << static_cast<int>(layout) << " S " << S);
        RotaryArgs args;
        args.layout = layout;
        args.attention_scale = 1.2;
        args.feature_offset = dn;
        const Shape shape{S, 3, 5, dn + dr + 1};
        const test::PairedInput x = test::paired_input(shape, dt, ++s);
        const test::PairedInput dy = test::paired_input(shape, dt, ++s);
        const Tensor y = rotary_forward(x.dev, gpu(freq), Tensor(), args);
        EXPECT_TRUE(test::close_as(host(y), rotary_forward(x.ref, freq, Tensor(), args), dt, "y"));
        const Tensor dx = rotary_backward(dy.dev, gpu(freq), Tensor(), args);
        EXPECT_TRUE(
            test::close_as(host(dx), rotary_backward(dy.ref, freq, Tensor(), args), dt, "dx"));
      }
    }
  }
}

TEST(MlaExpandKvCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  const int64_t heads = 5, dn = 9, dr = 6, dv = 7;
  for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
    for (int64_t S : {257, 1, 0}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << " S " << S);
      const test::PairedInput kv = test::paired_input({S, 2, heads, dn + dv}, dt, ++s);
      const test::PairedInput pe = test::paired_input({S, 2, dr}, dt, ++s);
      const MlaKeyValue d = mla_expand_kv_forward(kv.dev, pe.dev, dn);
      const MlaKeyValue r = mla_expand_kv_forward(kv.ref, pe.ref, dn);
      EXPECT_TRUE(d.k.is_cuda());
      EXPECT_TRUE(test::equal(host(d.k).to(r.k.dtype()), r.k, "k"));  // copies are exact
      EXPECT_TRUE(test::equal(host(d.v).to(r.v.dtype()), r.v, "v"));
      const test::PairedInput gk = test::paired_input({S, 2, heads, dn + dr}, dt, ++s);
      const test::PairedInput gv = test::paired_input({S, 2, heads, dv}, dt, ++s);
      const MlaKeyValueGrads gd = mla_expand_kv_backward(gk.dev, gv.dev, dn);
      const MlaKeyValueGrads gr = mla_expand_kv_backward(gk.ref, gv.ref, dn);
      EXPECT_TRUE(test::equal(host(gd.kv).to(gr.kv.dtype()), gr.kv, "grad kv"));
      EXPECT_TRUE(test::close_as(host(gd.k_pe), gr.k_pe, dt, "grad k_pe"));
    }
  }
}

}  // namespace
}  // namespace moe::ops
