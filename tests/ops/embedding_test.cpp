// Embedding lookup on the CPU: known answers (whole and vocab-parallel shards, whose zero rows
// add up to the whole table's lookup), fp64 gradient checks of dW, accumulation and repeated
// ids, out-of-range ids, empty input, bad arguments.
#include "moe/ops/embedding.h"

#include <gtest/gtest.h>

#include <cmath>

#include <vector>

#include "common/check.h"

namespace moe::ops {
namespace {

TEST(Embedding, KnownAnswer) {
  const Tensor w = Tensor::from_vector(std::vector<double>{0, 1, 10, 11, 20, 21}, {3, 2});
  for (DType id_type : {DType::i32, DType::i64}) {
    const Tensor ids = Tensor::from_vector(std::vector<int64_t>{2, 0, 2, 1}, {2, 2}).to(id_type);
    const Tensor y = embedding_forward(ids, w);
    EXPECT_EQ(y.shape(), (Shape{2, 2, 2}));
    EXPECT_TRUE(test::equal(
        y, Tensor::from_vector(std::vector<double>{20, 21, 0, 1, 20, 21, 10, 11}, {2, 2, 2})));
  }
}

TEST(Embedding, VocabShardsSumToTheWholeLookup) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t vocab = 12, hidden = 5, shards = 3, rows = vocab / shards;
  const Tensor w = test::random_normal({vocab, hidden}, DType::f32, seed);
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{0, 11, 4, 7, 3, 8, 4, 0}, {8});
  const Tensor whole = embedding_forward(ids, w);
  std::vector<double> sum(static_cast<size_t>(whole.numel()), 0.0);
  for (int64_t r = 0; r < shards; ++r) {
    EmbeddingArgs args;
    args.vocab_start = r * rows;
    args.vocab_size = vocab;
    const Tensor part = embedding_forward(ids, w.rows(r * rows, rows).clone(), args);
    const std::vector<double> v = part.to_double_vector();
    // Each token's row is non-zero in exactly its own shard.
    for (int64_t t = 0; t < 8; ++t) {
      const int64_t id = ids.to_vector<int32_t>()[static_cast<size_t>(t)];
      const bool mine = id >= r * rows && id < (r + 1) * rows;
      for (int64_t h = 0; h < hidden; ++h) {
        const double x = v[static_cast<size_t>(t * hidden + h)];
        if (!mine) {
          EXPECT_EQ(x, 0.0);
        }
        sum[static_cast<size_t>(t * hidden + h)] += x;
      }
    }
  }
  EXPECT_TRUE(test::equal(Tensor::from_vector(sum, {8, hidden}).to(DType::f32), whole));
}

TEST(Embedding, WeightGradientMatchesFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t vocab = 7, hidden = 3;
  Tensor w = test::random_normal({vocab, hidden}, DType::f64, seed);
  // Repeated ids (3 three times) and unused rows (5, 6).
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{3, 1, 3, 0, 4, 3, 2}, {7});
  const Tensor probe = test::random_normal({7, hidden}, DType::f64, seed + 1);
  auto loss = [&] { return test::dot(embedding_forward(ids, w), probe); };
  Tensor dw = Tensor::full({vocab, hidden}, NAN, DType::f64);  // written, never read
  embedding_backward(probe, ids, dw, false);
  EXPECT_TRUE(test::close(dw, test::numerical_gradient(loss, w), test::kGradCheckTol, "dW"));

  // Vocab shard [2, 5) of 7: only its ids contribute, at local rows.
  EmbeddingArgs args;
  args.vocab_start = 2;
  args.vocab_size = vocab;
  Tensor shard_w = w.rows(2, 3).clone();
  auto shard_loss = [&] { return test::dot(embedding_forward(ids, shard_w, args), probe); };
  Tensor shard_dw = Tensor::zeros({3, hidden}, DType::f64);
  embedding_backward(probe, ids, shard_dw, false, args);
  EXPECT_TRUE(test::close(shard_dw, test::numerical_gradient(shard_loss, shard_w),
                          test::kGradCheckTol, "shard dW"));
}

TEST(Embedding, GradientAccumulatesAndBf16UsesFp32) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 1, 0, 2}, {4});
  const Tensor dy = test::random_normal({4, 6}, DType::bf16, seed);
  const Tensor start = test::random_normal({3, 6}, DType::f32, seed + 1);
  Tensor written = Tensor::zeros({3, 6}, DType::f32);
  embedding_backward(dy, ids, written, false);
  Tensor acc = start.clone();
  embedding_backward(dy, ids, acc, true);
  const std::vector<float> a = acc.to_vector<float>(), s = start.to_vector<float>(),
                           g = written.to_vector<float>(), d = dy.to(DType::f32).to_vector<float>();
  // The accumulating backward adds token by token ((s + d0) + d1, in f32), the written one sums
  // the tokens first (s + (d0 + d1)): equal up to f32 rounding of the terms, not in ULPs of a
  // result that may cancel.
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], s[i] + g[i], 1e-6 * (std::abs(s[i]) + std::abs(g[i]) + 1.0));
  // Row 1 is the sum of tokens 0 and 1; row 0 is token 2.
  for (size_t h = 0; h < 6; ++h) {
    EXPECT_FLOAT_EQ(g[6 + h], d[h] + d[6 + h]);
    EXPECT_FLOAT_EQ(g[h], d[12 + h]);
  }
}

TEST(Embedding, OutOfRangeIdsThrowNamingTheToken) {
  const Tensor w = Tensor::zeros({4, 2}, DType::f32);
  const Tensor bad = Tensor::from_vector(std::vector<int64_t>{0, 4}, {2});
  try {
    embedding_forward(bad, w);
    FAIL() << "expected an error";
  } catch (const moe::Error& e) {
    EXPECT_NE(std::string(e.what()).find("token 1 has id 4"), std::string::npos) << e.what();
  }
  EXPECT_THROW(embedding_forward(Tensor::from_vector(std::vector<int32_t>{-1}, {1}), w),
               moe::Error);
  Tensor dw = Tensor::zeros({4, 2}, DType::f32);
  EXPECT_THROW(embedding_backward(Tensor::zeros({2, 2}, DType::f32), bad, dw, true), moe::Error);
  // In a shard, ids of other shards are fine; ids outside the global vocabulary are not.
  EmbeddingArgs args;
  args.vocab_start = 4;
  args.vocab_size = 8;
  EXPECT_NO_THROW(embedding_forward(bad, w, args));
  EXPECT_THROW(embedding_forward(Tensor::from_vector(std::vector<int64_t>{8}, {1}), w, args),
               moe::Error);
  EXPECT_THROW(check_token_ids(bad, 4), moe::Error);
  EXPECT_NO_THROW(check_token_ids(bad, 5));
}

TEST(Embedding, EmptyIds) {
  const Tensor w = Tensor::full({5, 3}, 1.0, DType::bf16);
  const Tensor ids = Tensor::empty({0}, DType::i64);
  EXPECT_EQ(embedding_forward(ids, w).shape(), (Shape{0, 3}));
  Tensor dw = Tensor::full({5, 3}, 2.0, DType::f32);
  embedding_backward(Tensor::empty({0, 3}, DType::bf16), ids, dw, true);
  EXPECT_TRUE(test::equal(dw, Tensor::full({5, 3}, 2.0, DType::f32)));
  embedding_backward(Tensor::empty({0, 3}, DType::bf16), ids, dw, false);
  EXPECT_TRUE(test::equal(dw, Tensor::zeros({5, 3}, DType::f32)));
}

TEST(Embedding, RejectsBadArguments) {
  const Tensor w = Tensor::zeros({4, 2}, DType::f32);
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{0, 1}, {2});
  EXPECT_THROW(embedding_forward(ids.to(DType::f32), w), moe::Error);
  EXPECT_THROW(embedding_forward(ids, Tensor::zeros({8}, DType::f32)), moe::Error);
  EXPECT_THROW(embedding_forward(ids, Tensor::zeros({4, 2}, DType::i32)), moe::Error);
  EmbeddingArgs args;
  args.vocab_start = 2;
  args.vocab_size = 5;  // the shard [2, 6) does not fit
  EXPECT_THROW(embedding_forward(ids, w, args), moe::Error);
  Tensor dw = Tensor::zeros({4, 2}, DType::f32);
  Tensor dw_bf16 = Tensor::zeros({4, 2}, DType::bf16);
  EXPECT_THROW(embedding_backward(Tensor::zeros({2, 3}, DType::f32), ids, dw, true), moe::Error);
  EXPECT_THROW(embedding_backward(Tensor::zeros({2, 2}, DType::bf16), ids, dw_bf16, true),
               moe::Error);
  EXPECT_THROW(embedding_backward(Tensor::zeros({2, 2}, DType::f64), ids, dw, true), moe::Error);
}

}  // namespace
}  // namespace moe::ops
