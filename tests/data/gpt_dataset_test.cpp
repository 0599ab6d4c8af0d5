// Megatron's GPTDataset: the sample index walked by hand, the properties every index must have
// (S + 1 tokens per sample, one token shared by consecutive samples, the flattened documents
// read in shuffled sample order, epochs and the separate final epoch), seeds, the cache, and
// errors. tests/data/check_gpt_dataset_with_python.py compares the indices with numpy.
#include "moe/data/gpt_dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>

#include "data/memory_corpus.h"
#include "moe/core/error.h"

namespace moe::data {
namespace {

namespace fs = std::filesystem;
using testing::MemoryCorpus;
using testing::token_of;

GPTDatasetConfig config_of(int64_t seq_length, int64_t seed, std::string cache_dir = "") {
  GPTDatasetConfig c;
  c.sequence_length = seq_length;
  c.random_seed = seed;
  c.split = "969,30,1";
  c.cache_dir = std::move(cache_dir);
  return c;
}

// The documents of document_index laid end to end: Megatron's flattened token stream.
std::vector<int64_t> flattened(const MemoryCorpus& corpus, const GPTIndices& indices) {
  std::vector<int64_t> out;
  for (int32_t d : indices.document_index)
    for (int64_t t = 0; t < corpus.sequence_lengths()[size_t(d)]; ++t)
      out.push_back(token_of(d, t));
  return out;
}

bool is_permutation_of_range(std::span<const int64_t> values, int64_t begin, int64_t end) {
  std::vector<int64_t> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  if (static_cast<int64_t>(sorted.size()) != end - begin) return false;
  for (size_t i = 0; i < sorted.size(); ++i)
    if (sorted[i] != begin + static_cast<int64_t>(i)) return false;
  return true;
}

TEST(GPTDataset, SampleIndexByHand) {
  // Lengths 3, 5, 2 in order, S = 4: 10 tokens give (10 - 1) / 4 = 2 samples of 5 tokens:
  // sample 0 = doc0[0..3) + doc1[0..1], sample 1 = doc1[1..5) + doc2[0..0].
  const std::vector<int32_t> lengths = {3, 5, 2};
  const std::vector<int32_t> order = {0, 1, 2};
  EXPECT_EQ(build_sample_index(lengths, order, 4, 1, 10), (std::vector<int64_t>{0, 0, 1, 1, 2, 0}));
  // The last sample may end on the last token of the last document.
  EXPECT_EQ(build_sample_index(lengths, order, 3, 1, 10),
            (std::vector<int64_t>{0, 0, 1, 0, 1, 3, 2, 1}));
  // Two epochs: the stream runs on into the second copy of the documents.
  const std::vector<int32_t> twice = {0, 1, 2, 0, 1, 2};
  EXPECT_EQ(build_sample_index(lengths, twice, 4, 2, 10).size(), 2u * (19 / 4 + 1));
}

TEST(GPTDataset, NumEpochsAsMegatron) {
  EXPECT_EQ(gpt_num_epochs(100, std::nullopt, 8), 1);
  EXPECT_EQ(gpt_num_epochs(100, 12, 8), 1);  // 12 * 8 + 1 = 97 <= 100
  EXPECT_EQ(gpt_num_epochs(100, 13, 8), 2);  // 105 > 100
  EXPECT_EQ(gpt_num_epochs(100, 0, 8), 1);
  EXPECT_EQ(gpt_num_epochs(10, 100, 4), 41);  // 401 tokens
}

TEST(GPTDataset, SamplesAreTheFlattenedDocumentsInShuffledOrder) {
  for (int64_t seq_length : {1, 7, 32, 200}) {
    SCOPED_TRACE(seq_length);
    auto corpus = std::make_shared<MemoryCorpus>(testing::random_lengths(60, 40, 11));
    GPTDataset dataset(corpus, "mem", {5, 55}, std::nullopt, Split::train,
                       config_of(seq_length, 1234));
    const GPTIndices& ix = dataset.indices();
    EXPECT_EQ(ix.num_epochs, 1);
    const std::vector<int64_t> stream = flattened(*corpus, ix);
    ASSERT_EQ(dataset.size(), (static_cast<int64_t>(stream.size()) - 1) / seq_length);
    EXPECT_TRUE(is_permutation_of_range(ix.shuffle_index, 0, dataset.size()));
    std::vector<int64_t> doc_ids(ix.document_index.begin(), ix.document_index.end());
    EXPECT_TRUE(is_permutation_of_range(doc_ids, 5, 55));
    bool crossed_boundary = false;
    for (int64_t i = 0; i < dataset.size(); ++i) {
      const std::vector<int64_t> sample = dataset.sample(i);
      ASSERT_EQ(static_cast<int64_t>(sample.size()), seq_length + 1);
      const int64_t j = ix.shuffle_index[size_t(i)];
      const auto begin = stream.begin() + j * seq_length;
      ASSERT_TRUE(std::equal(sample.begin(), sample.end(), begin)) << "sample " << i;
      crossed_boundary |= sample.front() / 1000 != sample.back() / 1000;
    }
    if (seq_length >= 32) {
      EXPECT_TRUE(crossed_boundary);
    }
    // Samples j and j + 1 of the unshuffled stream share one token: the last of j is the first
    // of j + 1 (read through the dataset, at the positions the shuffle put them).
    std::vector<int64_t> position_of(static_cast<size_t>(dataset.size()));
    for (int64_t i = 0; i < dataset.size(); ++i)
      position_of[size_t(ix.shuffle_index[size_t(i)])] = i;
    for (int64_t j = 0; j + 1 < dataset.size(); ++j)
      ASSERT_EQ(dataset.sample(position_of[size_t(j)]).back(),
                dataset.sample(position_of[size_t(j + 1)]).front());
  }
}

TEST(GPTDataset, EpochsRepeatEveryDocument) {
  auto corpus = std::make_shared<MemoryCorpus>(testing::random_lengths(30, 25, 3));
  int64_t tokens = 0;
  for (int32_t l : corpus->sequence_lengths()) tokens += l;
  const int64_t S = 16, per_epoch = (tokens - 1) / S;
  // Nearly three full epochs: the final one is shuffled with the others.
  const int64_t n = 3 * per_epoch - 1;
  GPTDataset dataset(corpus, "mem", {0, 30}, n, Split::train, config_of(S, 5));
  const GPTIndices& ix = dataset.indices();
  EXPECT_EQ(ix.num_epochs, 3);
  EXPECT_FALSE(ix.separate_final_epoch);
  EXPECT_GE(dataset.size(), n);
  for (int d = 0; d < 30; ++d)
    EXPECT_EQ(std::count(ix.document_index.begin(), ix.document_index.end(), d), 3);
  EXPECT_TRUE(is_permutation_of_range(ix.shuffle_index, 0, dataset.size()));
  // Documents of different epochs interleave (one shuffle over all epochs).
  std::set<int32_t> first_third(ix.document_index.begin(), ix.document_index.begin() + 30);
  EXPECT_LT(first_third.size(), 30u);
  const std::vector<int64_t> stream = flattened(*corpus, ix);
  for (int64_t i = 0; i < dataset.size(); i += 7) {
    const std::vector<int64_t> sample = dataset.sample(i);
    EXPECT_TRUE(
        std::equal(sample.begin(), sample.end(), stream.begin() + ix.shuffle_index[size_t(i)] * S))
        << "sample " << i;
  }
}

TEST(GPTDataset, SeparateFinalEpochIsShuffledOnItsOwn) {
  auto corpus = std::make_shared<MemoryCorpus>(testing::random_lengths(40, 30, 4));
  int64_t tokens = 0;
  for (int32_t l : corpus->sequence_lengths()) tokens += l;
  const int64_t S = 8, per_epoch = (tokens - 1) / S;
  // One sample more than an epoch: the second epoch is used for far less than 80%.
  GPTDataset dataset(corpus, "mem", {0, 40}, per_epoch + 1, Split::train, config_of(S, 5));
  const GPTIndices& ix = dataset.indices();
  EXPECT_EQ(ix.num_epochs, 2);
  EXPECT_TRUE(ix.separate_final_epoch);
  std::vector<int64_t> first(ix.document_index.begin(), ix.document_index.begin() + 40);
  std::vector<int64_t> last(ix.document_index.begin() + 40, ix.document_index.end());
  EXPECT_TRUE(is_permutation_of_range(first, 0, 40));
  EXPECT_TRUE(is_permutation_of_range(last, 0, 40));
  const int64_t before_final = (tokens - 1) / S;  // samples before the final epoch
  const std::span<const int64_t> shuffle(ix.shuffle_index);
  EXPECT_TRUE(is_permutation_of_range(shuffle.first(size_t(before_final)), 0, before_final));
  EXPECT_TRUE(
      is_permutation_of_range(shuffle.subspan(size_t(before_final)), before_final, dataset.size()));
}

TEST(GPTDataset, SameSeedSameOrderOtherSeedOtherOrder) {
  auto corpus = std::make_shared<MemoryCorpus>(testing::random_lengths(50, 60, 9));
  const auto order = [&](int64_t seed) {
    GPTDataset d(corpus, "mem", {0, 50}, 200, Split::train, config_of(16, seed));
    std::vector<int64_t> first_tokens;
    for (int64_t i = 0; i < d.size(); ++i) first_tokens.push_back(d.sample(i).front());
    return first_tokens;
  };
  EXPECT_EQ(order(1234), order(1234));
  EXPECT_NE(order(1234), order(1235));
}

TEST(GPTDataset, CacheIsWrittenOnceAndReused) {
  const fs::path dir = testing::fresh_folder("cache");
  auto corpus = std::make_shared<MemoryCorpus>(testing::random_lengths(50, 60, 9));
  GPTDataset built(corpus, "mem", {0, 48}, 300, Split::valid, config_of(16, 7, dir.string()));
  EXPECT_FALSE(built.loaded_from_cache());
  for (const char* f : {"description.txt", "document_index.npy", "sample_index.npy",
                        "shuffle_index.npy", "checksums.json"})
    EXPECT_TRUE(fs::is_regular_file(built.cache_path(f))) << f;
  EXPECT_NE(built.cache_path("x").find("-GPTDataset-valid-x"), std::string::npos);
  const auto written = fs::last_write_time(built.cache_path("shuffle_index.npy"));

  GPTDataset again(corpus, "mem", {0, 48}, 300, Split::valid, config_of(16, 7, dir.string()));
  EXPECT_TRUE(again.loaded_from_cache());
  EXPECT_EQ(fs::last_write_time(again.cache_path("shuffle_index.npy")), written);
  EXPECT_EQ(again.indices().document_index, built.indices().document_index);
  EXPECT_EQ(again.indices().sample_index, built.indices().sample_index);
  EXPECT_EQ(again.indices().shuffle_index, built.indices().shuffle_index);
  EXPECT_EQ(again.sample(17), built.sample(17));

  // Another description (seed, sample count, documents) is another set of files.
  GPTDataset other(corpus, "mem", {0, 48}, 301, Split::valid, config_of(16, 7, dir.string()));
  EXPECT_FALSE(other.loaded_from_cache());
  EXPECT_NE(other.cache_path("x"), built.cache_path("x"));
  // A changed corpus (other lengths, same name) does not reuse the stale cache.
  auto changed = std::make_shared<MemoryCorpus>(testing::random_lengths(50, 60, 10));
  GPTDataset fresh(changed, "mem", {0, 48}, 300, Split::valid, config_of(16, 7, dir.string()));
  EXPECT_FALSE(fresh.loaded_from_cache());
  // An incomplete set (interrupted build) is rebuilt.
  fs::remove(built.cache_path("sample_index.npy"));
  GPTDataset rebuilt(corpus, "mem", {0, 48}, 300, Split::valid, config_of(16, 7, dir.string()));
  EXPECT_FALSE(rebuilt.loaded_from_cache());
  EXPECT_EQ(rebuilt.indices().shuffle_index, built.indices().shuffle_index);
  fs::remove_all(dir);
}

// Expects constructing the dataset to throw an error mentioning every part of `needles`.
void expect_refused(const std::function<void()>& make, std::vector<std::string> needles) {
  try {
    make();
    ADD_FAILURE() << "no error";
  } catch (const moe::Error& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

TEST(GPTDataset, DamagedCacheIsRefused) {
  const fs::path dir = testing::fresh_folder("damaged");
  auto corpus = std::make_shared<MemoryCorpus>(testing::random_lengths(40, 60, 2));
  const auto make = [&] {
    return GPTDataset(corpus, "mem", {0, 40}, 100, Split::train, config_of(8, 3, dir.string()));
  };
  const GPTDataset built = make();
  const std::string shuffle = built.cache_path("shuffle_index.npy");
  const auto rewrite = [](const std::string& path, const std::function<void(std::string&)>& edit) {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    edit(bytes);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  std::string original;
  rewrite(shuffle, [&](std::string& b) { original = b; });

  // One flipped bit in the data: the checksum fails.
  rewrite(shuffle, [](std::string& b) { b[b.size() - 3] ^= 0x01; });
  expect_refused(make, {"corrupted", shuffle, "Remove the files"});
  // A truncated file.
  rewrite(shuffle, [&](std::string& b) { b = original.substr(0, original.size() - 4); });
  expect_refused(make, {"damaged", shuffle});
  // A description that is not ours (a hash collision or an edited file).
  rewrite(shuffle, [&](std::string& b) { b = original; });
  EXPECT_TRUE(make().loaded_from_cache());
  rewrite(built.cache_path("description.txt"), [](std::string& b) { b += " "; });
  expect_refused(make, {"describes another dataset", "description.txt"});
  fs::remove_all(dir);
}

TEST(GPTDataset, RejectsBadInput) {
  auto corpus = std::make_shared<MemoryCorpus>(testing::random_lengths(20, 30, 1));
  const auto make = [&](std::pair<int64_t, int64_t> docs, std::optional<int64_t> n,
                        GPTDatasetConfig c) {
    return GPTDataset(corpus, "mem", docs, n, Split::train, c);
  };
  EXPECT_THROW(make({0, 20}, 10, config_of(0, 1)), moe::Error);   // seq length
  EXPECT_THROW(make({0, 20}, 10, config_of(8, -1)), moe::Error);  // seed
  EXPECT_THROW(make({0, 20}, 10, config_of(8, int64_t{1} << 32)), moe::Error);
  EXPECT_THROW(make({0, 21}, 10, config_of(8, 1)), moe::Error);  // past the corpus
  expect_refused([&] { make({5, 5}, 10, config_of(8, 1)); }, {"is the split empty"});
  GPTDataset ok = make({0, 20}, 10, config_of(8, 1));
  EXPECT_THROW(ok.sample(ok.size()), moe::Error);
  EXPECT_THROW(ok.sample(-1), moe::Error);
  // A corpus whose document bounds do not cover its sequences.
  auto odd = std::make_shared<MemoryCorpus>(testing::random_lengths(6, 30, 1));
  odd->set_document_indices({0, 2, 4});
  expect_refused(
      [&] {
        GPTDataset(odd, "odd", {0, 6}, 1, Split::train, config_of(4, 1));
      },
      {"document indices must run from 0 to the number of sequences"});
  // Several sequences per document: Megatron's GPT dataset addresses sequences, so do we.
  odd->set_document_indices({0, 2, 6});
  GPTDataset by_sequence(odd, "odd", {0, 6}, std::nullopt, Split::train, config_of(4, 1));
  EXPECT_EQ(by_sequence.indices().document_index.size(), 6u);
}

}  // namespace
}  // namespace moe::data
