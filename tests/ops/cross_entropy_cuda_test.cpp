// CUDA fused linear + cross-entropy against the CPU reference on fresh random inputs: f32 and
// bf16 (the bf16 CUDA result against the CPU f32 reference on the same bf16-rounded inputs),
// T = 257, H = 259, V = 50000 (six full 8192-row chunks and a partial one) and V = 1000 (less
// than one chunk), small chunks (chunk_size 1 and a partial last chunk), ignored labels, a loss
// mask, both reductions, i64 and i32 labels; dW accumulation over two calls; vocabulary shards;
// all labels ignored; logits at the 1e4 scale; out-of-range labels give NaN; zero tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/check.h"
#include "moe/ops/cross_entropy.h"
#include "moe/ops/elementwise.h"

namespace moe::ops {
namespace {

using test::gpu;
using test::host;

std::vector<int64_t> random_labels(int64_t tokens, int64_t vocab, uint64_t seed,
                                   int64_t ignore_every) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, vocab - 1);
  std::vector<int64_t> y(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t)
    y[t] = ignore_every > 0 && t % ignore_every == 1 ? kIgnoreIndex : dist(gen);
  if (tokens > 0 && ignore_every > 0) y[0] = vocab - 1;  // the last column, in the last chunk
  return y;
}

Tensor labels_tensor(const std::vector<int64_t>& y, DType dtype) {
  const Tensor t = Tensor::from_vector(y, {static_cast<int64_t>(y.size())});
  return dtype == DType::i64 ? t : t.to(dtype);
}

// Mask weights in [0.5, 2] with every 7th token masked out.
Tensor random_mask(int64_t tokens, uint64_t seed) {
  Tensor mask = test::random_uniform({tokens}, DType::f32, seed, 0.5, 2.0);
  for (int64_t t = 3; t < tokens; t += 7) mask.data<float>()[t] = 0.0f;
  return mask;
}

struct Case {
  int64_t tokens, hidden_size, vocab;
  DType dtype;
  CrossEntropyOptions options;
  bool with_mask = true;
  DType label_dtype = DType::i64;
};

// Runs forward and backward (twice, for dW accumulation) on both devices and compares.
void expect_matches_cpu(const Case& c, uint64_t seed) {
  const DType dt = c.dtype;
  const DType ref_dt = DType::f32;  // f32 and bf16 both compare against the f32 CPU reference
  // Logits with a spread of a few units: hidden ~ N(0, 1), weight ~ N(0, 2 / H).
  const Tensor h = test::random_normal({c.tokens, c.hidden_size}, DType::f32, seed).to(dt);
  const Tensor w = test::random_normal({c.vocab, c.hidden_size}, DType::f32, seed + 1,
                                       Device::cpu(), std::sqrt(2.0 / double(c.hidden_size)))
                       .to(dt);
  const Tensor y = labels_tensor(random_labels(c.tokens, c.vocab, seed + 2, 5), c.label_dtype);
  const Tensor mask = c.with_mask ? random_mask(c.tokens, seed + 3) : Tensor();
  const Tensor h_ref = h.to(ref_dt), w_ref = w.to(ref_dt);

  const CrossEntropyResult ref = linear_cross_entropy_forward(h_ref, w_ref, y, mask, c.options);
  const CrossEntropyResult got =
      linear_cross_entropy_forward(gpu(h), gpu(w), gpu(y), gpu(mask), c.options);
  ASSERT_TRUE(got.loss.is_cuda());
  EXPECT_EQ(got.loss.dim(), 0);
  EXPECT_EQ(got.loss.dtype(), DType::f32);
  EXPECT_TRUE(test::close_as(host(got.loss), ref.loss, dt, "loss"));
  EXPECT_TRUE(test::close_as(host(got.logsumexp), ref.logsumexp, dt, "logsumexp"));
  EXPECT_TRUE(test::close_as(host(got.token_losses), ref.token_losses, dt, "token losses"));
  EXPECT_TRUE(test::close_as(host(got.weight_sum), ref.weight_sum, DType::f32, "N"));
  EXPECT_TRUE(test::close_as(
      host(linear_cross_entropy_per_token(gpu(h), gpu(w), gpu(y), c.options)),
      linear_cross_entropy_per_token(h_ref, w_ref, y, c.options), dt, "per-token losses"));

  const double grad_loss = 1.3;
  Tensor dw_ref = Tensor::zeros({c.vocab, c.hidden_size}, DType::f32);
  const Tensor dh_ref =
      linear_cross_entropy_backward(grad_loss, h_ref, w_ref, y, mask, ref, dw_ref, c.options);
  Tensor dw = Tensor::zeros({c.vocab, c.hidden_size}, DType::f32, Device::cuda());
  const Tensor dh = linear_cross_entropy_backward(grad_loss, gpu(h), gpu(w), gpu(y), gpu(mask), got,
                                                  dw, c.options);
  EXPECT_EQ(dh.dtype(), dt);
  EXPECT_TRUE(test::close_as(host(dh), dh_ref, dt, "dh"));
  EXPECT_TRUE(test::close_as(host(dw), dw_ref, dt, "dW"));

  // A second call adds the same dW again and writes (not adds) dh.
  const Tensor dh2 = linear_cross_entropy_backward(grad_loss, gpu(h), gpu(w), gpu(y), gpu(mask),
                                                   got, dw, c.options);
  Tensor dw_twice = dw_ref.clone();
  add_(dw_twice, dw_ref);
  EXPECT_TRUE(test::close_as(host(dw), dw_twice, dt, "dW after two calls"));
  EXPECT_TRUE(test::close_as(host(dh2), dh_ref, dt, "dh of the second call"));
}

TEST(LinearCrossEntropyCuda, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (int64_t vocab : {50000, 1000}) {
      for (bool with_mask : {true, false}) {
        SCOPED_TRACE(testing::Message()
                     << dtype_name(dt) << " V=" << vocab << (with_mask ? " mask" : " no mask"));
        Case c{257, 259, vocab, dt, {}, with_mask, with_mask ? DType::i64 : DType::i32};
        expect_matches_cpu(c, s += 10);
      }
    }
  }
}

TEST(LinearCrossEntropyCuda, SmallChunksAndSumReduction) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  for (DType dt : {DType::f32, DType::bf16}) {
    // 2500 = 2 x 1000 + a partial 500; chunk_size 1: every column its own chunk.
    for (auto [vocab, chunk] : {std::pair<int64_t, int64_t>{2500, 1000}, {37, 1}, {300, 7}}) {
      for (CrossEntropyReduction reduction :
           {CrossEntropyReduction::mean, CrossEntropyReduction::sum}) {
        SCOPED_TRACE(testing::Message()
                     << dtype_name(dt) << " V=" << vocab << " chunk=" << chunk
                     << (reduction == CrossEntropyReduction::mean ? " mean" : " sum"));
        CrossEntropyOptions options;
        options.chunk_size = chunk;
        options.reduction = reduction;
        expect_matches_cpu(Case{33, 65, vocab, dt, options}, s += 10);
      }
    }
  }
}

// Shards [0, 700), [700, 700) (empty), [700, 1000) on the GPU, combined there, equal the CPU
// whole; each shard's backward gives its dW rows and a share of dh.
TEST(LinearCrossEntropyCuda, VocabShards) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 129, hidden_size = 67, vocab = 1000;
  const Tensor h = test::random_normal({tokens, hidden_size}, DType::f32, seed);
  const Tensor w =
      test::random_normal({vocab, hidden_size}, DType::f32, seed + 1, Device::cpu(), 0.2);
  const Tensor y = labels_tensor(random_labels(tokens, vocab, seed + 2, 4), DType::i64);
  const Tensor mask = random_mask(tokens, seed + 3);
  CrossEntropyOptions options;
  options.chunk_size = 256;
  const CrossEntropyResult ref = linear_cross_entropy_forward(h, w, y, mask);
  Tensor dw_ref = Tensor::zeros({vocab, hidden_size}, DType::f32);
  const Tensor dh_ref = linear_cross_entropy_backward(1.0, h, w, y, mask, ref, dw_ref);

  const Tensor hg = gpu(h), wg = gpu(w), yg = gpu(y), mg = gpu(mask);
  const std::vector<std::pair<int64_t, int64_t>> ranges{{0, 700}, {700, 0}, {700, 300}};
  std::vector<CrossEntropyPartials> shards;
  for (auto [start, count] : ranges)
    shards.push_back(linear_cross_entropy_partials(hg, wg.rows(start, count), yg, start, options));
  const CrossEntropyResult got = cross_entropy_combine(shards, yg, mg, vocab, options);
  EXPECT_TRUE(test::close_as(host(got.loss), ref.loss, DType::f32, "loss"));
  EXPECT_TRUE(test::close_as(host(got.logsumexp), ref.logsumexp, DType::f32, "lse"));
  Tensor dh_sum = Tensor::zeros({tokens, hidden_size}, DType::f32, Device::cuda());
  for (auto [start, count] : ranges) {
    Tensor dw = Tensor::zeros({count, hidden_size}, DType::f32, Device::cuda());
    add_(dh_sum, linear_cross_entropy_backward(1.0, hg, wg.rows(start, count), yg, mg, got, dw,
                                               options, start));
    EXPECT_TRUE(test::close_as(host(dw), dw_ref.rows(start, count), DType::f32, "dW shard"));
  }
  EXPECT_TRUE(test::close_as(host(dh_sum), dh_ref, DType::f32, "sum of shards' dh"));
}

TEST(LinearCrossEntropyCuda, AllIgnoredGivesZeros) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 257, hidden_size = 259, vocab = 9000;
  for (DType dt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor h = gpu(test::random_normal({tokens, hidden_size}, dt, seed));
    const Tensor w = gpu(test::random_normal({vocab, hidden_size}, dt, seed + 1));
    const Tensor y = gpu(Tensor::full({tokens}, double(kIgnoreIndex), DType::i64));
    const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, Tensor());
    EXPECT_EQ(r.loss.item(), 0.0);
    EXPECT_EQ(r.weight_sum.item(), 0.0);
    EXPECT_TRUE(test::equal(host(r.token_losses), Tensor::zeros({tokens}, DType::f32)));
    Tensor dw = gpu(Tensor::full({vocab, hidden_size}, 0.5, DType::f32));
    const Tensor dh = linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, dw);
    EXPECT_TRUE(test::equal(host(dh), Tensor::zeros({tokens, hidden_size}, dt)));
    EXPECT_TRUE(test::equal(host(dw), Tensor::full({vocab, hidden_size}, 0.5, DType::f32)));
  }
}

// Logits of magnitude ~1e4: finite, and equal to the CPU's.
TEST(LinearCrossEntropyCuda, LargeLogitsStayFinite) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 65, hidden_size = 16, vocab = 20000;
  const Tensor h =
      test::random_normal({tokens, hidden_size}, DType::f32, seed, Device::cpu(), 100.0);
  const Tensor w = test::random_normal({vocab, hidden_size}, DType::f32, seed + 1, Device::cpu(),
                                       100.0 / std::sqrt(double(hidden_size)));
  const Tensor y = labels_tensor(random_labels(tokens, vocab, seed + 2, 5), DType::i64);
  const CrossEntropyResult ref = linear_cross_entropy_forward(h, w, y, Tensor());
  const CrossEntropyResult got = linear_cross_entropy_forward(gpu(h), gpu(w), gpu(y), Tensor());
  EXPECT_TRUE(std::isfinite(got.loss.item()));
  EXPECT_GT(host(got.logsumexp).to_double_vector()[0], 1000.0) << "the test needs large logits";
  EXPECT_TRUE(test::close_as(host(got.loss), ref.loss, DType::f32, "loss"));
  Tensor dw_ref = Tensor::zeros({vocab, hidden_size}, DType::f32);
  const Tensor dh_ref = linear_cross_entropy_backward(1.0, h, w, y, Tensor(), ref, dw_ref);
  Tensor dw = Tensor::zeros({vocab, hidden_size}, DType::f32, Device::cuda());
  const Tensor dh = linear_cross_entropy_backward(1.0, gpu(h), gpu(w), gpu(y), Tensor(), got, dw);
  // Near-one-hot softmax; logits this large carry ~1e-3 absolute rounding in f32.
  EXPECT_TRUE(test::close(host(dh), dh_ref, 1e-3, "dh"));
  EXPECT_TRUE(test::close(host(dw), dw_ref, 1e-3, "dW"));
}

// CUDA cannot throw on a bad label without a host synchronisation: the loss becomes NaN.
TEST(LinearCrossEntropyCuda, OutOfRangeLabelGivesNaN) {
  MOE_REQUIRE_GPU();
  const Tensor h = gpu(Tensor::full({3, 4}, 0.1, DType::f32));
  const Tensor w = gpu(Tensor::full({5, 4}, 0.2, DType::f32));
  const Tensor y = gpu(labels_tensor({0, 5, 1}, DType::i32));
  const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, Tensor());
  EXPECT_TRUE(std::isnan(r.loss.item()));
  EXPECT_TRUE(std::isnan(host(r.token_losses).to_double_vector()[1]));
}

TEST(LinearCrossEntropyCuda, EmptyTokens) {
  MOE_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::bf16}) {
    const Tensor h = Tensor::empty({0, 8}, dt, Device::cuda());
    const Tensor w = gpu(Tensor::zeros({10, 8}, dt));
    const Tensor y = Tensor::empty({0}, DType::i64, Device::cuda());
    const CrossEntropyResult r = linear_cross_entropy_forward(h, w, y, Tensor());
    EXPECT_EQ(r.loss.item(), 0.0);
    Tensor dw = gpu(Tensor::full({10, 8}, 2.0, DType::f32));
    const Tensor dh = linear_cross_entropy_backward(1.0, h, w, y, Tensor(), r, dw);
    EXPECT_EQ(dh.shape(), (Shape{0, 8}));
    EXPECT_TRUE(test::equal(host(dw), Tensor::full({10, 8}, 2.0, DType::f32)));
  }
}

TEST(LinearCrossEntropyCuda, RejectsF64AndMixedDevices) {
  MOE_REQUIRE_GPU();
  const Tensor h = gpu(Tensor::zeros({2, 3}, DType::f64));
  const Tensor w = gpu(Tensor::zeros({4, 3}, DType::f64));
  const Tensor y = gpu(labels_tensor({0, 1}, DType::i64));
  EXPECT_THROW(linear_cross_entropy_forward(h, w, y, Tensor()), moe::Error);
  EXPECT_THROW(linear_cross_entropy_forward(gpu(Tensor::zeros({2, 3}, DType::f32)),
                                            Tensor::zeros({4, 3}, DType::f32), y, Tensor()),
               moe::Error);
}


// The forward and backward at once (token chunks of the whole vocabulary) against the CPU
// reference pair: one chunk, several chunks with a short last one, one token per chunk, no
// tokens; mean and sum; with and without a mask; dW accumulates onto what is there.
TEST(LinearCrossEntropyCuda, ForwardBackwardInOnePassMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t s = seed;
  struct Shape {
    int64_t tokens, vocab, chunk_elements;
  };
  for (DType dt : {DType::f32, DType::bf16}) {
    for (const Shape& shape : {Shape{257, 5003, int64_t{1} << 30}, Shape{257, 1000, 100 * 1000},
                               Shape{33, 999, 1}, Shape{0, 100, int64_t{1} << 30}}) {
      for (CrossEntropyReduction reduction :
           {CrossEntropyReduction::mean, CrossEntropyReduction::sum}) {
        const bool with_mask = reduction == CrossEntropyReduction::mean;
        SCOPED_TRACE(testing::Message() << dtype_name(dt) << " T=" << shape.tokens
                                        << " V=" << shape.vocab << " chunk elements="
                                        << shape.chunk_elements << (with_mask ? " mask" : ""));
        const int64_t H = 131;
        s += 10;
        const Tensor h = test::random_normal({shape.tokens, H}, DType::f32, s).to(dt);
        const Tensor w = test::random_normal({shape.vocab, H}, DType::f32, s + 1, Device::cpu(),
                                             std::sqrt(2.0 / double(H)))
                             .to(dt);
        const Tensor y = labels_tensor(random_labels(shape.tokens, shape.vocab, s + 2, 5),
                                       with_mask ? DType::i64 : DType::i32);
        const Tensor mask = with_mask ? random_mask(shape.tokens, s + 3) : Tensor();
        CrossEntropyOptions options;
        options.reduction = reduction;
        options.fused_chunk_elements = shape.chunk_elements;
        const double grad_loss = 0.7;

        const Tensor h_ref = h.to(DType::f32), w_ref = w.to(DType::f32);
        const CrossEntropyResult ref = linear_cross_entropy_forward(h_ref, w_ref, y, mask, options);
        const Tensor dw_start = test::random_normal({shape.vocab, H}, DType::f32, s + 4);
        Tensor dw_ref = dw_start.clone();
        const Tensor dh_ref =
            linear_cross_entropy_backward(grad_loss, h_ref, w_ref, y, mask, ref, dw_ref, options);

        Tensor dw = gpu(dw_start);
        const CrossEntropyWithGrad got = linear_cross_entropy_forward_backward(
            grad_loss, gpu(h), gpu(w), gpu(y), gpu(mask), dw, options);
        EXPECT_TRUE(test::close_as(host(got.result.loss), ref.loss, dt, "loss"));
        EXPECT_TRUE(test::close_as(host(got.result.logsumexp), ref.logsumexp, dt, "lse"));
        EXPECT_TRUE(test::close_as(host(got.result.token_losses), ref.token_losses, dt,
                                   "token losses"));
        EXPECT_TRUE(test::close_as(host(got.result.weight_sum), ref.weight_sum, DType::f32, "N"));
        EXPECT_EQ(got.grad_hidden.dtype(), dt);
        EXPECT_TRUE(test::close_as(host(got.grad_hidden), dh_ref, dt, "dh"));
        EXPECT_TRUE(test::close_as(host(dw), dw_ref, dt, "dW"));
      }
    }
  }
}

}  // namespace
}  // namespace moe::ops
