// Text generation: greedy against an argmax computed here step by step from the model's
// logits, the equivalences top-k 1 == top-p tiny == greedy, the sliding window, stopping at
// the end-of-document id, reproducible sampling whose empirical distribution matches
// softmax(logits / T) (and its top-k / top-p restrictions), padding ids never sampled, and
// errors for bad options.
#include "moe/train/generate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "moe/core/error.h"
#include "moe/data/byte_tokenizer.h"
#include "moe/nn/kv_cache.h"
#include "nn/gpt_test_util.h"
#include "nn/mla_test_util.h"

namespace moe {
namespace {

using train::GenerateOptions;
using train::SamplingOptions;

// The last position's logits of `ids` (one sequence), computed independently of generate().
std::vector<double> last_logits(nn::GPTModel& model, const std::vector<int64_t>& ids) {
  const int64_t S = static_cast<int64_t>(ids.size());
  const Tensor logits = model.logits(Tensor::from_vector(ids, {S, 1}));
  EXPECT_EQ(logits.shape(), (Shape{S, 1, model.config().vocab_size}));
  const std::vector<double> all = logits.to_double_vector();
  return std::vector<double>(all.end() - model.config().vocab_size, all.end());
}

int64_t argmax(const std::vector<double>& v) {
  return std::max_element(v.begin(), v.end()) - v.begin();  // first of equal maxima
}

// Greedy continuation computed here: argmax of the last logits over the last `window` ids.
std::vector<int64_t> reference_greedy(nn::GPTModel& model, std::vector<int64_t> sequence,
                                      int64_t steps, size_t window) {
  std::vector<int64_t> out;
  for (int64_t t = 0; t < steps; ++t) {
    const size_t start = sequence.size() > window ? sequence.size() - window : 0;
    const int64_t next = argmax(last_logits(
        model, std::vector<int64_t>(sequence.begin() + static_cast<long>(start), sequence.end())));
    out.push_back(next);
    sequence.push_back(next);
  }
  return out;
}

struct Fixture {
  explicit Fixture(uint64_t seed, int64_t vocab = 11)
      : config(make_config(vocab)), model(config, DType::f64, Device::cpu(), seed) {}
  static nn::ModelConfig make_config(int64_t vocab) {
    nn::ModelConfig c = test::tiny_gpt_config();
    c.vocab_size = vocab;
    c.max_position_embeddings = 32;
    return c;
  }
  nn::ModelConfig config;
  nn::GPTModel model;
};

GenerateOptions greedy_options(int64_t tokens) {
  GenerateOptions o;
  o.max_new_tokens = tokens;
  o.sampling.temperature = 0.0;
  return o;
}

TEST(Generate, GreedyIsTheArgmaxOfEachStep) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Fixture f(seed);
  const std::vector<int64_t> prompt = {3, 7, 1};
  const std::vector<int64_t> out = train::generate(f.model, prompt, greedy_options(8));
  EXPECT_EQ(out, reference_greedy(f.model, prompt, 8, 1000));
  EXPECT_TRUE(train::generate(f.model, prompt, greedy_options(0)).empty());
}

TEST(Generate, WindowKeepsTheLastIds) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Fixture f(seed);
  const std::vector<int64_t> prompt = {3, 7, 1, 9, 0, 4};
  GenerateOptions o = greedy_options(12);
  o.max_sequence_length = 4;
  EXPECT_EQ(train::generate(f.model, prompt, o), reference_greedy(f.model, prompt, 12, 4));
  // The model's max_position_embeddings (32) is the window by default: 30 new ids from 6 go
  // past it.
  EXPECT_EQ(train::generate(f.model, prompt, greedy_options(30)),
            reference_greedy(f.model, prompt, 30, 32));
}

TEST(Generate, TopKOneAndTinyTopPAreGreedy) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Fixture f(seed);
  const std::vector<int64_t> prompt = {2, 5};
  const std::vector<int64_t> greedy = train::generate(f.model, prompt, greedy_options(10));
  GenerateOptions top_k = greedy_options(10);
  top_k.sampling = {.temperature = 0.8, .top_k = 1, .top_p = 1.0};
  top_k.seed = seed + 1;
  EXPECT_EQ(train::generate(f.model, prompt, top_k), greedy);
  GenerateOptions top_p = greedy_options(10);
  top_p.sampling = {.temperature = 1.3, .top_k = 0, .top_p = 1e-9};
  top_p.seed = seed + 2;
  EXPECT_EQ(train::generate(f.model, prompt, top_p), greedy);
}

TEST(Generate, SamplingIsReproducibleAndUsesDrawTOfTheSeed) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Fixture f(seed);
  const std::vector<int64_t> prompt = {4, 4, 8};
  GenerateOptions o;
  o.max_new_tokens = 24;
  o.sampling.temperature = 5.0;  // flat: two seeds agreeing on 24 ids is (nearly) impossible
  o.seed = seed + 7;
  const std::vector<int64_t> a = train::generate(f.model, prompt, o);
  EXPECT_EQ(a.size(), 24u);
  EXPECT_EQ(train::generate(f.model, prompt, o), a);
  o.seed = seed + 8;
  EXPECT_NE(train::generate(f.model, prompt, o), a);
  // Step t draws from the distribution of its context with draw t of the seed.
  o.seed = seed + 7;
  std::vector<int64_t> sequence = prompt;
  for (size_t t = 0; t < a.size(); ++t) {
    EXPECT_EQ(a[t], train::sample_token(last_logits(f.model, sequence), o.sampling, o.seed, t))
        << "step " << t;
    sequence.push_back(a[t]);
  }
}

TEST(Generate, StopsAfterTheEndOfDocumentId) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Fixture f(seed);
  const std::vector<int64_t> prompt = {1, 2, 3};
  const std::vector<int64_t> greedy = train::generate(f.model, prompt, greedy_options(10));
  // Pick the id of some step k that did not appear before k: generation must end there.
  size_t k = greedy.size() - 1;
  while (k > 0 && std::find(greedy.begin(), greedy.begin() + static_cast<long>(k), greedy[k]) !=
                      greedy.begin() + static_cast<long>(k))
    --k;
  GenerateOptions o = greedy_options(10);
  o.end_of_document_id = greedy[k];
  EXPECT_EQ(train::generate(f.model, prompt, o),
            std::vector<int64_t>(greedy.begin(), greedy.begin() + static_cast<long>(k) + 1));
}

TEST(Generate, NeverSamplesIdsPastTheSampledVocabulary) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Fixture f(seed);
  GenerateOptions o;
  o.max_new_tokens = 40;
  o.sampling.temperature = 10.0;
  o.sampled_vocab_size = 4;
  o.seed = seed;
  for (const int64_t id : train::generate(f.model, {1, 2}, o)) EXPECT_LT(id, 4);
  // Greedy too: the argmax over the first 4 ids.
  GenerateOptions g = greedy_options(1);
  g.sampled_vocab_size = 4;
  const std::vector<double> logits = last_logits(f.model, {1, 2});
  EXPECT_EQ(train::generate(f.model, {1, 2}, g)[0],
            argmax(std::vector<double>(logits.begin(), logits.begin() + 4)));
}

TEST(Generate, ByteTextMasksPaddingAndStopsAtEndOfDocument) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  Fixture f(seed, data::ByteTokenizer::padded_vocab_size());  // 384: 127 padding ids
  GenerateOptions o;
  o.max_new_tokens = 64;
  o.sampling.temperature = 20.0;  // near uniform over 384 ids: unmasked, padding would appear
  o.seed = seed;
  // decode() would throw on a padding id.
  const std::string text = train::generate_byte_text(f.model, "Hello", o);
  o.sampling.temperature = 0.0;
  o.max_new_tokens = 5;
  const std::vector<int64_t> ids = train::generate(f.model, data::ByteTokenizer::encode("Hello"),
                                                   {.max_new_tokens = 5,
                                                    .sampling = {.temperature = 0.0},
                                                    .seed = 1,
                                                    .end_of_document_id = 256,
                                                    .sampled_vocab_size = 257});
  EXPECT_EQ(train::generate_byte_text(f.model, "Hello", o), data::ByteTokenizer::decode(ids));
  EXPECT_LE(text.size(), 64u);
  // An empty prompt starts a document: the context is the end-of-document id alone.
  EXPECT_NO_THROW((void)train::generate_byte_text(f.model, "", o));

  Fixture wide(seed, 2000);
  try {
    (void)train::generate_byte_text(wide.model, "Hi", o);
    FAIL() << "a 2000-id vocabulary was taken as bytes";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer"), std::string::npos) << e.what();
  }
}

// ---- the sampler on a fixed logit vector ----

std::vector<double> softmax(const std::vector<double>& logits, double temperature) {
  std::vector<double> p(logits.size());
  const double top = *std::max_element(logits.begin(), logits.end());
  double total = 0.0;
  for (size_t i = 0; i < p.size(); ++i) total += p[i] = std::exp((logits[i] - top) / temperature);
  for (double& x : p) x /= total;
  return p;
}

// Pearson's chi-square of observed counts against probabilities (ids of probability 0 must
// never be drawn: they make it infinite).
double chi_square(const std::vector<int64_t>& counts, const std::vector<double>& probs,
                  int64_t draws) {
  double chi2 = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = probs[i] * static_cast<double>(draws);
    if (expected == 0.0) {
      if (counts[i] != 0) return INFINITY;
      continue;
    }
    const double d = static_cast<double>(counts[i]) - expected;
    chi2 += d * d / expected;
  }
  return chi2;
}

std::vector<int64_t> draw_counts(const std::vector<double>& logits, const SamplingOptions& o,
                                 uint64_t seed, int64_t draws) {
  std::vector<int64_t> counts(logits.size(), 0);
  for (int64_t d = 0; d < draws; ++d)
    ++counts[static_cast<size_t>(train::sample_token(logits, o, seed, static_cast<uint64_t>(d)))];
  return counts;
}

const std::vector<double> kLogits = {1.0, 0.5, -0.3, 2.0, 0.0, -1.5, 1.2};

// The chi-square quantiles at p = 1e-6 (df 6: 35.9; df 2: 27.6): a correct sampler fails this
// about once in a million runs.
constexpr double kChi2Df6 = 35.9, kChi2Df2 = 27.6;

TEST(Sampling, TemperatureMatchesSoftmaxEmpirically) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const SamplingOptions o{.temperature = 0.7};
  const std::vector<double> expected = softmax(kLogits, 0.7);
  const std::vector<double> dist = train::sampling_distribution(kLogits, o);
  EXPECT_LT(test::relative_error(dist, expected), 1e-14);
  const int64_t draws = 100000;
  const std::vector<int64_t> counts = draw_counts(kLogits, o, seed, draws);
  EXPECT_LT(chi_square(counts, expected, draws), kChi2Df6);
  // The same test tells temperature 0.7 from 1: it has the power to fail.
  EXPECT_GT(chi_square(counts, softmax(kLogits, 1.0), draws), 10 * kChi2Df6);
  // Reproducible: a pure function of (seed, draw).
  EXPECT_EQ(draw_counts(kLogits, o, seed, 1000), draw_counts(kLogits, o, seed, 1000));
}

TEST(Sampling, TopKKeepsTheKLargest) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const SamplingOptions o{.temperature = 1.5, .top_k = 3};
  // The 3 largest are ids 3 (2.0), 6 (1.2), 0 (1.0).
  const std::vector<double> kept = softmax({kLogits[3], kLogits[6], kLogits[0]}, 1.5);
  std::vector<double> expected(kLogits.size(), 0.0);
  expected[3] = kept[0];
  expected[6] = kept[1];
  expected[0] = kept[2];
  EXPECT_LT(test::relative_error(train::sampling_distribution(kLogits, o), expected), 1e-14);
  const int64_t draws = 60000;
  EXPECT_LT(chi_square(draw_counts(kLogits, o, seed, draws), expected, draws), kChi2Df2);
  // k >= vocabulary keeps everything.
  EXPECT_LT(test::relative_error(
                train::sampling_distribution(kLogits, {.temperature = 1.5, .top_k = 100}),
                softmax(kLogits, 1.5)),
            1e-14);
}

TEST(Sampling, TopPKeepsTheSmallestNucleus) {
  const std::vector<double> probs = {0.15, 0.5, 0.05, 0.3};
  std::vector<double> logits;
  for (const double p : probs) logits.push_back(std::log(p));
  // Sorted: 0.5 (id 1), 0.3 (id 3), 0.15 (id 0), 0.05 (id 2).
  EXPECT_LT(test::relative_error(train::sampling_distribution(logits, {.top_p = 0.7}),
                                 {0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8}),
            1e-14);
  EXPECT_LT(test::relative_error(train::sampling_distribution(logits, {.top_p = 0.85}),
                                 {0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95}),
            1e-14);
  EXPECT_LT(test::relative_error(train::sampling_distribution(logits, {.top_p = 0.4}),
                                 {0.0, 1.0, 0.0, 0.0}),
            1e-14);
  // After top-k 2 the nucleus is taken of the renormalised pair (0.625, 0.375).
  EXPECT_LT(test::relative_error(train::sampling_distribution(logits, {.top_k = 2, .top_p = 0.6}),
                                 {0.0, 1.0, 0.0, 0.0}),
            1e-14);
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t draws = 40000;
  EXPECT_LT(chi_square(draw_counts(logits, {.top_p = 0.7}, seed, draws),
                       {0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8}, draws),
            kChi2Df2);
}

TEST(Sampling, GreedyTakesTheLowestIdAmongEqualMaxima) {
  const std::vector<double> logits = {1.0, 3.0, 3.0, -INFINITY};
  EXPECT_EQ(train::sample_token(logits, {.temperature = 0.0}, 1, 0), 1);
  EXPECT_EQ(train::sample_token(logits, {.temperature = 2.0, .top_k = 1}, 1, 0), 1);
  // -inf ids are never drawn; the sampled vocabulary cuts the rest.
  const std::vector<double> dist = train::sampling_distribution(logits, {.temperature = 1.0});
  EXPECT_EQ(dist[3], 0.0);
  EXPECT_EQ(train::sample_token(logits, {.temperature = 0.0}, 1, 0, 1), 0);
}

TEST(Sampling, UniformIsInsideTheOpenInterval) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  double sum = 0.0;
  for (uint64_t d = 0; d < 10000; ++d) {
    const double u = train::sampling_uniform(seed, d);
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

TEST(Generate, BadOptionsAreErrors) {
  Fixture f(1);
  const std::vector<int64_t> prompt = {1, 2};
  auto with = [](auto edit) {
    GenerateOptions o;
    o.max_new_tokens = 2;
    edit(o);
    return o;
  };
  const GenerateOptions bad[] = {
      with([](GenerateOptions& o) { o.sampling.temperature = -1.0; }),
      with([](GenerateOptions& o) { o.sampling.temperature = NAN; }),
      with([](GenerateOptions& o) { o.sampling.top_k = -1; }),
      with([](GenerateOptions& o) { o.sampling.top_p = 0.0; }),
      with([](GenerateOptions& o) { o.sampling.top_p = 1.5; }),
      with([](GenerateOptions& o) { o.max_new_tokens = -1; }),
      with([](GenerateOptions& o) { o.max_sequence_length = 33; }),  // > max_position 32
      with([](GenerateOptions& o) { o.max_sequence_length = -1; }),
      with([](GenerateOptions& o) { o.sampled_vocab_size = 12; }),  // > vocab 11
      with([](GenerateOptions& o) { o.end_of_document_id = 11; }),
  };
  for (const GenerateOptions& o : bad)
    EXPECT_THROW((void)train::generate(f.model, prompt, o), Error);
  EXPECT_THROW((void)train::generate(f.model, {}, GenerateOptions{}), Error);
  EXPECT_THROW((void)train::generate(f.model, {1, 11}, GenerateOptions{}), Error);
  EXPECT_THROW((void)train::generate(f.model, {-1}, GenerateOptions{}), Error);
  GenerateOptions padded;
  padded.sampled_vocab_size = 5;
  EXPECT_THROW((void)train::generate(f.model, {1, 7}, padded), Error);  // 7 is padding here
  EXPECT_THROW(train::check_sampling_options({.top_p = -0.5}), Error);

  // The sampler refuses logits it cannot draw from.
  EXPECT_THROW((void)train::sample_token({0.0, NAN}, {}, 1, 0), Error);
  EXPECT_THROW((void)train::sample_token({0.0, INFINITY}, {}, 1, 0), Error);
  EXPECT_THROW((void)train::sample_token({-INFINITY, -INFINITY}, {.temperature = 0.0}, 1, 0),
               Error);
  EXPECT_THROW((void)train::sample_token({0.0, 1.0}, {}, 1, 0, 3), Error);
}

// ---- the KV cache, batches, several end ids ------------------------------------------------

namespace kv {

// A GQA model (qk-norm, q/k/v biases, a MoE layer) and an MLA model (DeepSeek-style: latent
// norms, interleaved rotary, YaRN, a MoE layer), vocabulary 23, 40 positions.
nn::ModelConfig cache_config(bool mla) {
  nn::ModelConfig c = mla ? test::small_mla_moe_config() : test::tiny_gpt_config();
  if (!mla) c.add_qkv_bias = true;
  c.qk_layernorm = true;
  c.vocab_size = 23;
  c.max_position_embeddings = 40;
  c.validate();
  return c;
}

class KvCache : public ::testing::TestWithParam<bool> {};

// Each cached step's logits are the full forward's last row (f64), for a prompt prefilled at
// once and then one token at a time.
TEST_P(KvCache, DecodeStepLogitsAreTheFullForwardsLastRow) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::GPTModel model(cache_config(GetParam()), DType::f64, Device::cpu(), seed);
  const std::vector<int64_t> ids = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3};
  nn::SequenceKvCache cache;
  const size_t prompt = 5;
  std::vector<double> cached = nn::decode_step(model, Tensor::from_vector(
      std::vector<int64_t>(ids.begin(), ids.begin() + prompt), {5, 1}), {&cache})
                                   .to_double_vector();
  for (size_t n = prompt;; ++n) {
    const std::vector<double> full =
        last_logits(model, std::vector<int64_t>(ids.begin(), ids.begin() + static_cast<long>(n)));
    ASSERT_EQ(cached.size(), full.size());
    for (size_t v = 0; v < full.size(); ++v) EXPECT_NEAR(cached[v], full[v], 1e-10) << n;
    EXPECT_EQ(cache.length, static_cast<int64_t>(n));
    if (n == ids.size()) break;
    cached = nn::decode_step(model, Tensor::from_vector(std::vector<int64_t>{ids[n]}, {1, 1}),
                             {&cache})
                 .to_double_vector();
  }
}

// Greedy generation gives the same ids with and without the cache, past the window as well.
TEST_P(KvCache, GreedyIsTheSameWithAndWithoutTheCache) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::GPTModel model(cache_config(GetParam()), DType::f64, Device::cpu(), seed);
  for (const int64_t window : {0, 9}) {
    GenerateOptions o = greedy_options(30);
    o.max_sequence_length = window;
    const std::vector<int64_t> prompt = {7, 2, 19, 4};
    o.kv_cache = false;
    const std::vector<int64_t> uncached = train::generate(model, prompt, o);
    o.kv_cache = true;
    train::GenerateStats stats;
    const std::vector<int64_t> cached = train::generate_batch(model, {prompt}, o, &stats)[0];
    EXPECT_EQ(cached, uncached) << "window " << window;
    EXPECT_EQ(cached, reference_greedy(model, prompt, 30, window == 0 ? 40 : 9));
    EXPECT_EQ(stats.prompt_tokens, 4);
    EXPECT_EQ(stats.decode_tokens, 29);
  }
}

// A batch of prompts of different lengths gives what each prompt gives alone (greedy and
// sampled), and each sequence stops at its own end id.
TEST_P(KvCache, BatchEqualsPromptsOneByOne) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  nn::GPTModel model(cache_config(GetParam()), DType::f64, Device::cpu(), seed);
  const std::vector<std::vector<int64_t>> prompts = {{1}, {5, 6, 7, 8, 9, 10}, {22, 0, 3}};
  GenerateOptions sampled;
  sampled.max_new_tokens = 20;
  sampled.sampling.temperature = 0.9;
  sampled.seed = seed;
  for (const GenerateOptions& o : {greedy_options(20), sampled}) {
    const auto batch = train::generate_batch(model, prompts, o);
    ASSERT_EQ(batch.size(), prompts.size());
    for (size_t b = 0; b < prompts.size(); ++b) {
      EXPECT_EQ(batch[b], train::generate(model, prompts[b], o)) << b;
      GenerateOptions uncached = o;
      uncached.kv_cache = false;
      EXPECT_EQ(batch[b], train::generate(model, prompts[b], uncached)) << b;
    }
  }
  // End ids: the id the second sequence makes at step 2 ends it there; the others go on
  // unless they make it too.
  const auto free_run = train::generate_batch(model, prompts, greedy_options(20));
  GenerateOptions o = greedy_options(20);
  const int64_t end = free_run[1][2];
  o.stop_ids = {end};
  const auto stopped = train::generate_batch(model, prompts, o);
  for (size_t b = 0; b < prompts.size(); ++b) {
    const auto at = std::find(free_run[b].begin(), free_run[b].end(), end);
    const std::vector<int64_t> expected(free_run[b].begin(),
                                        at == free_run[b].end() ? at : at + 1);
    EXPECT_EQ(stopped[b], expected) << b;
  }
  EXPECT_LE(stopped[1].size(), 3u);  // at step 2, or earlier where the id came before
}

INSTANTIATE_TEST_SUITE_P(Attention, KvCache, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "mla" : "gqa");
                         });

}  // namespace kv

}  // namespace
}  // namespace moe

