// Megatron's BlendedDataset: the blending rule by hand, every prefix of the blend within one
// sample of its weights, the exhaustive blend, per-dataset sizes with the 0.5% surplus,
// reads, oversampling, and the cache.
#include "moe/data/blended_dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/memory_corpus.h"
#include "moe/core/error.h"
#include "moe/data/gpt_dataset.h"

namespace moe::data {
namespace {

namespace fs = std::filesystem;
using testing::MemoryCorpus;

std::vector<int> as_ints(const std::vector<int16_t>& v) {
  return {v.begin(), v.end()};
}

TEST(BlendedDataset, BlendingByHand) {
  // Equal weights: ties go to the first dataset; max(i, 1) makes samples 0 and 1 both count 1.
  const std::vector<double> half = {0.5, 0.5};
  BlendingIndices b = build_blending_indices(half, 4);
  EXPECT_EQ(as_ints(b.dataset_index), (std::vector<int>{0, 1, 0, 1}));
  EXPECT_EQ(b.dataset_sample_index, (std::vector<int64_t>{0, 0, 1, 1}));
  // Exhaustive, counts 3 and 1: weights 0.75 / 0.25, dataset 1 leaves once it gave its sample.
  const std::vector<int64_t> counts = {3, 1};
  b = build_exhaustive_blending_indices(counts);
  EXPECT_EQ(as_ints(b.dataset_index), (std::vector<int>{0, 1, 0, 0}));
  EXPECT_EQ(b.dataset_sample_index, (std::vector<int64_t>{0, 0, 1, 2}));
}

TEST(BlendedDataset, EveryPrefixFollowsTheWeights) {
  const std::vector<double> weights = normalize_weights(std::vector<double>{5, 3, 1.5, 0.5});
  const int64_t size = 5000;
  const BlendingIndices b = build_blending_indices(weights, size);
  std::vector<int64_t> count(weights.size(), 0);
  double worst = 0.0;
  for (int64_t i = 0; i < size; ++i) {
    const auto d = static_cast<size_t>(b.dataset_index[size_t(i)]);
    // Each dataset's samples are taken in order 0, 1, 2, ...
    ASSERT_EQ(b.dataset_sample_index[size_t(i)], count[d]);
    ++count[d];
    for (size_t k = 0; k < weights.size(); ++k)
      worst = std::max(worst, std::abs(double(count[k]) - weights[k] * double(i + 1)));
  }
  EXPECT_LE(worst, 1.0);  // the greedy rule's bound: never a whole sample off
  for (size_t k = 0; k < weights.size(); ++k) EXPECT_NEAR(double(count[k]), weights[k] * size, 1.0);
}

TEST(BlendedDataset, ExhaustiveGivesExactCounts) {
  const std::vector<int64_t> sizes = {7, 130, 1, 42};
  const BlendingIndices b = build_exhaustive_blending_indices(sizes);
  ASSERT_EQ(b.dataset_index.size(), 180u);
  for (size_t d = 0; d < sizes.size(); ++d)
    EXPECT_EQ(std::count(b.dataset_index.begin(), b.dataset_index.end(), int16_t(d)), sizes[d]);
}

TEST(BlendedDataset, SizesPerDatasetWithMegatronSurplus) {
  // Megatron: ceil(ceil(n * w) * 1.005) built, ceil(n * w) used (values from Python).
  const std::vector<double> w = normalize_weights(std::vector<double>{30, 70});
  const std::array<std::optional<int64_t>, 3> targets = {1000, 200, 7};
  const auto built = size_per_split_per_dataset(w, targets, 0.005);
  const auto used = size_per_split_per_dataset(w, targets, 0.0);
  EXPECT_EQ(built[0], (std::array<int64_t, 3>{302, 61, 4}));
  EXPECT_EQ(built[1], (std::array<int64_t, 3>{704, 141, 6}));
  EXPECT_EQ(used[0], (std::array<int64_t, 3>{300, 60, 3}));
  EXPECT_EQ(used[1], (std::array<int64_t, 3>{700, 140, 5}));
  EXPECT_THROW(size_per_split_per_dataset(w, {1000, std::nullopt, 7}, 0.005), moe::Error);
}

std::shared_ptr<GPTDataset> gpt(int64_t docs, uint64_t seed, std::optional<int64_t> samples,
                                const std::string& name) {
  auto corpus = std::make_shared<MemoryCorpus>(testing::random_lengths(docs, 50, seed), name);
  GPTDatasetConfig c;
  c.sequence_length = 16;
  c.random_seed = 1234;
  c.split = "1";
  return std::make_shared<GPTDataset>(corpus, name, std::pair<int64_t, int64_t>{0, docs}, samples,
                                      Split::train, c);
}

TEST(BlendedDataset, ReadsTheChosenDatasetSample) {
  auto a = gpt(40, 1, 80, "a");
  auto b = gpt(60, 2, 120, "b");
  BlendedDataset blend({a, b}, {2.0, 3.0}, 150, Split::train);
  EXPECT_EQ(blend.weights(), (std::vector<double>{0.4, 0.6}));
  ASSERT_EQ(blend.size(), 150);
  EXPECT_EQ(blend.sample_length(), 17);
  std::vector<int64_t> got(17);
  for (int64_t i = 0; i < blend.size(); ++i) {
    blend.read_sample(i, got.data());
    const auto& ix = blend.indices();
    const auto& from = ix.dataset_index[size_t(i)] == 0 ? a : b;
    EXPECT_EQ(got, from->sample(ix.dataset_sample_index[size_t(i)]));
  }
  EXPECT_THROW(blend.read_sample(150, got.data()), moe::Error);
}

TEST(BlendedDataset, RefusesToOversample) {
  auto a = gpt(10, 1, std::nullopt, "a");  // one epoch: few samples
  auto b = gpt(60, 2, 200, "b");
  try {
    BlendedDataset blend({a, b}, {0.9, 0.1}, 200, Split::train);
    ADD_FAILURE() << "no error";
  } catch (const moe::Error& e) {
    EXPECT_NE(std::string(e.what()).find("which holds only"), std::string::npos) << e.what();
  }
  EXPECT_THROW(BlendedDataset({a, b}, {1.0, 0.0}, 10, Split::train), moe::Error);
  EXPECT_THROW(BlendedDataset({a, b}, {1.5, 2.0}, std::nullopt, Split::train), moe::Error);
  EXPECT_THROW(BlendedDataset({a}, {1.0, 2.0}, 10, Split::train), moe::Error);
}

TEST(BlendedDataset, CacheIsWrittenOnceAndReused) {
  const fs::path dir = testing::fresh_folder("blend_cache");
  auto a = gpt(40, 1, 80, "a");
  auto b = gpt(60, 2, 120, "b");
  BlendedDataset built({a, b}, {1.0, 1.0}, 100, Split::train, dir.string());
  EXPECT_FALSE(built.loaded_from_cache());
  EXPECT_TRUE(fs::is_regular_file(built.cache_path("dataset_index.npy")));
  BlendedDataset again({a, b}, {1.0, 1.0}, 100, Split::train, dir.string());
  EXPECT_TRUE(again.loaded_from_cache());
  EXPECT_EQ(again.indices().dataset_index, built.indices().dataset_index);
  EXPECT_EQ(again.indices().dataset_sample_index, built.indices().dataset_sample_index);
  BlendedDataset other({a, b}, {1.0, 2.0}, 100, Split::train, dir.string());
  EXPECT_FALSE(other.loaded_from_cache());
  // A flipped byte is refused.
  const std::string path = built.cache_path("dataset_sample_index.npy");
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(-2, std::ios::end);
  f.put('\x7f');
  f.close();
  EXPECT_THROW(BlendedDataset({a, b}, {1.0, 1.0}, 100, Split::train, dir.string()), moe::Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe::data
