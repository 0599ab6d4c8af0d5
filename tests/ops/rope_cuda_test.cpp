// CUDA rotary embeddings against the CPU reference on fresh random inputs: f32, bf16 (against
// CPU f32 on the same bf16 values), f64; odd sizes (D = 72 with Dr = 40, heads = 3, T = 257);
// the three layouts; default positions with an offset on [S, B, heads, D], given i32/i64
// positions (up to 1e5) on [T, heads, D]; plain RoPE and YaRN (attention scale != 1); forward
// and backward; bitwise determinism; zero tokens.
#include <gtest/gtest.h>

#include <vector>

#include "common/check.h"
#include "moe/ops/rope.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;

Tensor random_positions(int64_t tokens, uint64_t seed, DType dtype) {
  std::vector<int64_t> p;
  for (double v : test::random_uniform({tokens}, DType::f64, seed, 0.0, 1e5).to_vector<double>())
    p.push_back(static_cast<int64_t>(v));
  return Tensor::from_vector(p, {tokens}).to(dtype);
}

TEST(RotaryCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  YarnScaling yarn;
  yarn.factor = 40;
  yarn.original_max_position_embeddings = 4096;
  yarn.mscale = 1.0;
  yarn.mscale_all_dim = 0.707;  // attention scale != 1
  const RotaryFrequencies plain = rope_frequencies(40, 10000.0);
  const RotaryFrequencies scaled = yarn_frequencies(40, 10000.0, yarn);
  for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
    const DType freq_dtype = dt == DType::f64 ? DType::f64 : DType::f32;
    for (const RotaryFrequencies* freqs : {&plain, &scaled}) {
      const Tensor freq = inv_freq_tensor(*freqs, freq_dtype, Device::cpu());
      for (RotaryLayout layout : {RotaryLayout::half, RotaryLayout::interleaved,
                                  RotaryLayout::interleaved_to_half}) {
        for (int form = 0; form < 4; ++form) {
          // 0: [S, B, h, D] by index + offset; 1: [T, h, D] i32 positions; 2: i64 positions;
          // 3: zero tokens.
          SCOPED_TRACE(testing::Message() << dtype_name(dt) << " layout " << static_cast<int>(layout)
                                          << " form " << form
                                          << (freqs == &scaled ? " yarn" : " plain"));
          RotaryArgs args;
          args.layout = layout;
          args.attention_scale = freqs->attention_scale;
          Shape shape;
          Tensor positions;
          if (form == 0) {
            shape = {37, 7, 3, 72};
            args.position_offset = 4000;
          } else if (form == 3) {
            shape = {0, 3, 72};
          } else {
            shape = {257, 3, 72};
            positions = random_positions(257, ++s, form == 1 ? DType::i32 : DType::i64);
          }
          const Tensor x = test::random_normal(shape, DType::f32, ++s).to(dt);
          const Tensor dy = test::random_normal(shape, DType::f32, ++s).to(dt);
          const Tensor y = rotary_forward(gpu(x), gpu(freq), gpu(positions), args);
          EXPECT_TRUE(y.is_cuda());
          EXPECT_EQ(y.dtype(), dt);
          EXPECT_TRUE(test::close_as(
              host(y), rotary_forward(x.to(test::reference_dtype(dt)), freq, positions, args), dt, "y"));
          const Tensor dx = rotary_backward(gpu(dy), gpu(freq), gpu(positions), args);
          EXPECT_TRUE(test::close_as(
              host(dx), rotary_backward(dy.to(test::reference_dtype(dt)), freq, positions, args), dt, "dx"));
        }
      }
    }
  }
}

TEST(RotaryCuda, DeterministicAndInverse) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor x = gpu(test::random_normal({257, 3, 72}, DType::f32, seed));
  const Tensor pos = gpu(random_positions(257, seed + 1, DType::i64));
  const Tensor freq = inv_freq_tensor(rope_frequencies(40, 1e6), DType::f32, Device::cuda());
  RotaryArgs args;
  args.layout = RotaryLayout::interleaved;
  const Tensor a = rotary_forward(x, freq, pos, args);
  const Tensor b = rotary_forward(x, freq, pos, args);
  EXPECT_TRUE(test::equal(host(a), host(b)));
  EXPECT_TRUE(test::close_as(host(rotary_backward(a, freq, pos, args)), host(x), DType::f32));
}

}  // namespace
}  // namespace moe::ops
