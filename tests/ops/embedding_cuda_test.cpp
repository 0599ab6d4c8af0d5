// CUDA embedding lookup against the CPU reference on fresh random ids (many repeats, so the
// deterministic segment sums are exercised) and weights: f32, bf16 (against CPU f32 on the same
// bf16 values), f64; H = 259 (2-byte word copies) and 256 (16-byte words); i32 and i64 ids;
// vocab shards; dW written and accumulated; bitwise determinism; out-of-range ids counted
// without a host sync; zero tokens.
#include <gtest/gtest.h>

#include <vector>

#include "common/check.h"
#include "moe/ops/embedding.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;

// `tokens` ids in [0, range), i64.
Tensor random_ids(int64_t tokens, int64_t range, uint64_t seed) {
  const std::vector<double> u =
      test::random_uniform({tokens}, DType::f64, seed, 0.0, static_cast<double>(range))
          .to_vector<double>();
  std::vector<int64_t> ids;
  for (double v : u) ids.push_back(std::min<int64_t>(static_cast<int64_t>(v), range - 1));
  return Tensor::from_vector(ids, {tokens});
}

TEST(EmbeddingCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  const int64_t vocab = 300;
  for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
    for (int64_t hidden : {259, 256}) {
      for (int64_t tokens : {257, 0}) {
        for (DType id_type : {DType::i64, DType::i32}) {
          for (int shard : {-1, 0, 2}) {  // -1: the whole table; else shard r of 3
            for (bool accumulate : {false, true}) {
              SCOPED_TRACE(testing::Message()
                           << dtype_name(dt) << " H=" << hidden << " T=" << tokens << " "
                           << dtype_name(id_type) << " shard " << shard
                           << (accumulate ? " accumulate" : " write"));
              EmbeddingArgs args;
              int64_t rows = vocab;
              if (shard >= 0) {
                rows = vocab / 3;
                args.vocab_start = shard * rows;
                args.vocab_size = vocab;
              }
              // Ids from a third of the vocabulary: many repeats, many untouched rows.
              const Tensor ids = random_ids(tokens, vocab / 3 + 50, ++s).to(id_type);
              const Tensor w = test::random_normal({rows, hidden}, dt, ++s);
              const Tensor dy = test::random_normal({tokens, hidden}, dt, ++s);
              const Tensor y = embedding_forward(gpu(ids), gpu(w), args);
              EXPECT_TRUE(test::equal(host(y), embedding_forward(ids, w, args)));  // a copy
              const Tensor start = test::random_normal({rows, hidden}, test::reference_dtype(dt), ++s);
              Tensor dw = gpu(start);
              Tensor dw_ref = start.clone();
              embedding_backward(gpu(dy), gpu(ids), dw, accumulate, args);
              embedding_backward(dy.to(test::reference_dtype(dt)), ids, dw_ref, accumulate, args);
              EXPECT_TRUE(test::close_as(host(dw), dw_ref, test::reference_dtype(dt), "dW"));
            }
          }
        }
      }
    }
  }
}

TEST(EmbeddingCuda, BackwardIsBitwiseDeterministic) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  // 4097 tokens over 7 ids: long runs of one id, summed in token order.
  const Tensor ids = gpu(random_ids(4097, 7, seed));
  const Tensor dy = gpu(test::random_normal({4097, 259}, DType::bf16, seed + 1));
  Tensor dw[2] = {Tensor::zeros({11, 259}, DType::f32, Device::cuda()),
                  Tensor::zeros({11, 259}, DType::f32, Device::cuda())};
  for (int run = 0; run < 2; ++run) embedding_backward(dy, ids, dw[run], false);
  EXPECT_TRUE(test::equal(host(dw[0]), host(dw[1])));
  Tensor dw_ref = Tensor::zeros({11, 259}, DType::f32);
  embedding_backward(host(dy).to(DType::f32), host(ids), dw_ref, false);
  EXPECT_TRUE(test::close_as(host(dw[0]), dw_ref, DType::f32, "dW"));
}

TEST(EmbeddingCuda, OutOfRangeIdsAreCountedAndGiveZeroRows) {
  MOE_REQUIRE_GPU();
  const Tensor w = gpu(Tensor::full({4, 3}, 1.0, DType::f32));
  const Tensor ids = gpu(Tensor::from_vector(std::vector<int32_t>{0, 7, -2, 3, 4}, {5}));
  EmbeddingArgs args;
  args.invalid_count = Tensor::zeros({1}, DType::i32, Device::cuda());
  const Tensor y = embedding_forward(ids, w, args);
  EXPECT_EQ(host(args.invalid_count).to_vector<int32_t>()[0], 3);
  const std::vector<float> v = host(y).to_vector<float>();
  for (int t = 0; t < 5; ++t)
    for (int h = 0; h < 3; ++h) EXPECT_EQ(v[t * 3 + h], (t == 0 || t == 3) ? 1.0f : 0.0f);
  // The backward skips them.
  Tensor dw = Tensor::zeros({4, 3}, DType::f32, Device::cuda());
  embedding_backward(gpu(Tensor::full({5, 3}, 1.0, DType::f32)), ids, dw, false);
  const std::vector<float> g = host(dw).to_vector<float>();
  for (int r = 0; r < 4; ++r)
    for (int h = 0; h < 3; ++h) EXPECT_EQ(g[r * 3 + h], (r == 0 || r == 3) ? 1.0f : 0.0f);
  EXPECT_THROW(check_token_ids(ids, 4), moe::Error);
}

}  // namespace
}  // namespace moe::ops
