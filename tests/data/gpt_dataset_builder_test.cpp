// From --data-path / --split / the schedule to Megatron's split datasets: blend parsing,
// sample counts, a single corpus, a weighted blend (sizes with the surplus), an unweighted
// blend, empty splits, and the default cache folder beside the data.
#include "moe/data/gpt_dataset_builder.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "data/memory_corpus.h"
#include "moe/core/error.h"
#include "moe/data/blended_dataset.h"
#include "moe/data/gpt_dataset.h"

namespace moe::data {
namespace {

namespace fs = std::filesystem;
using testing::MemoryCorpus;
using Strings = std::vector<std::string>;

TEST(GPTDatasetBuilder, ParsesDataPathLikeMegatron) {
  DataBlend one = parse_data_path(Strings{"data/wiki_text_document"});
  EXPECT_EQ(one.prefixes, Strings{"data/wiki_text_document"});
  EXPECT_FALSE(one.weights);
  DataBlend two = parse_data_path(Strings{"a", "b"});
  EXPECT_EQ(two.prefixes, (Strings{"a", "b"}));
  EXPECT_FALSE(two.weights);
  DataBlend weighted = parse_data_path(Strings{"30", "a", "0.7e2", "b"});
  EXPECT_EQ(weighted.prefixes, (Strings{"a", "b"}));
  EXPECT_EQ(*weighted.weights, (std::vector<double>{30.0, 70.0}));
  EXPECT_THROW(parse_data_path(Strings{}), moe::Error);
  EXPECT_THROW(parse_data_path(Strings{"0", "a"}), moe::Error);
  EXPECT_THROW(parse_data_path(Strings{"-1", "a", "1", "b"}), moe::Error);
  EXPECT_THROW(parse_data_path(Strings{"30", "a", "b"}), moe::Error);
}

TEST(GPTDatasetBuilder, SampleCountsAsMegatron) {
  SampleCountArgs a;
  a.train_iters = 100;
  a.global_batch_size = 8;
  a.eval_interval = 10;
  a.eval_iters = 2;
  auto n = megatron_sample_counts(a);
  EXPECT_EQ(n[0], 800);
  EXPECT_EQ(n[1], (100 / 10 + 1) * 2 * 8);
  EXPECT_EQ(n[2], 16);
  a.train_samples = 1234;
  a.skip_train = true;
  n = megatron_sample_counts(a);
  EXPECT_EQ(n[0], 1234);
  EXPECT_EQ(n[1], 16);
}

struct Corpora {
  std::map<std::string, std::shared_ptr<MemoryCorpus>> by_name;
  CorpusOpener opener() {
    return [this](const std::string& name) -> std::shared_ptr<const TokenSequences> {
      return by_name.at(name);
    };
  }
};

GPTDataConfig config_for(DataBlend blend, const std::string& cache) {
  GPTDataConfig c;
  c.blend = std::move(blend);
  c.split = "90,8,2";
  c.sequence_length = 16;
  c.seed = 1234;
  c.data_cache_path = cache;
  c.num_samples = {400, 60, 20};
  return c;
}

TEST(GPTDatasetBuilder, OneCorpusGivesAGPTDatasetPerSplit) {
  const fs::path dir = testing::fresh_folder("builder_one");
  Corpora corpora;
  corpora.by_name["a"] = std::make_shared<MemoryCorpus>(testing::random_lengths(200, 60, 1));
  const auto splits =
      build_gpt_datasets(config_for(parse_data_path(Strings{"a"}), dir.string()), corpora.opener());
  const std::pair<int64_t, int64_t> ranges[] = {{0, 180}, {180, 196}, {196, 200}};
  const int64_t wanted[] = {400, 60, 20};
  for (int s = 0; s < 3; ++s) {
    const auto* gpt = dynamic_cast<const GPTDataset*>(splits[size_t(s)].get());
    ASSERT_NE(gpt, nullptr);
    EXPECT_GE(gpt->size(), wanted[s]);
    EXPECT_EQ(gpt->requested_samples(), wanted[s]);
    std::vector<int32_t> docs = gpt->indices().document_index;
    EXPECT_GE(*std::min_element(docs.begin(), docs.end()), ranges[s].first);
    EXPECT_LT(*std::max_element(docs.begin(), docs.end()), ranges[s].second);
  }
  fs::remove_all(dir);
}

TEST(GPTDatasetBuilder, WeightedBlendTakesCeilOfWeightTimesCount) {
  const fs::path dir = testing::fresh_folder("builder_blend");
  Corpora corpora;
  corpora.by_name["a"] = std::make_shared<MemoryCorpus>(testing::random_lengths(100, 60, 1));
  corpora.by_name["b"] = std::make_shared<MemoryCorpus>(testing::random_lengths(300, 60, 2));
  GPTDataConfig c = config_for(parse_data_path(Strings{"30", "a", "70", "b"}), dir.string());
  c.split = "1,1,0";
  const auto splits = build_gpt_datasets(c, corpora.opener());
  EXPECT_EQ(splits[2], nullptr);  // weight 0
  const auto* train = dynamic_cast<const BlendedDataset*>(splits[0].get());
  ASSERT_NE(train, nullptr);
  EXPECT_EQ(train->size(), 120 + 280);  // ceil(400 * 0.3) + ceil(400 * 0.7)
  const auto* a = dynamic_cast<const GPTDataset*>(train->datasets()[0].get());
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->requested_samples(), 121);  // ceil(120 * 1.005)
  const auto* valid = dynamic_cast<const BlendedDataset*>(splits[1].get());
  ASSERT_NE(valid, nullptr);
  EXPECT_EQ(valid->size(), 18 + 42);
  EXPECT_EQ(std::count(train->indices().dataset_index.begin(), train->indices().dataset_index.end(),
                       int16_t{0}),
            120);
  EXPECT_TRUE(fs::is_regular_file(train->cache_path("description.txt")));
  fs::remove_all(dir);
}

TEST(GPTDatasetBuilder, UnweightedBlendFollowsCorpusSizes) {
  Corpora corpora;
  corpora.by_name["a"] = std::make_shared<MemoryCorpus>(testing::random_lengths(100, 60, 1));
  corpora.by_name["b"] = std::make_shared<MemoryCorpus>(testing::random_lengths(300, 60, 2));
  const fs::path dir = testing::fresh_folder("builder_unweighted");
  GPTDataConfig c = config_for(parse_data_path(Strings{"a", "b"}), dir.string());
  c.num_samples = {100000, std::nullopt, 5};
  const auto splits = build_gpt_datasets(c, corpora.opener());
  const auto* train = dynamic_cast<const BlendedDataset*>(splits[0].get());
  ASSERT_NE(train, nullptr);
  const int64_t one_epoch = train->datasets()[0]->size() + train->datasets()[1]->size();
  EXPECT_EQ(train->size(), one_epoch);  // capped at one epoch of each
  EXPECT_EQ(splits[1]->size(),
            dynamic_cast<const BlendedDataset&>(*splits[1]).datasets()[0]->size() +
                dynamic_cast<const BlendedDataset&>(*splits[1]).datasets()[1]->size());
  EXPECT_EQ(splits[2]->size(), 5);
  fs::remove_all(dir);
}

TEST(GPTDatasetBuilder, EmptySplitAndDefaultCacheFolder) {
  const fs::path dir = testing::fresh_folder("builder_default");
  const std::string prefix = (dir / "corpus_text_document").string();
  Corpora corpora;
  corpora.by_name[prefix] = std::make_shared<MemoryCorpus>(testing::random_lengths(20, 60, 1));
  GPTDataConfig c = config_for(parse_data_path(Strings{prefix}), "");
  c.split = "99,1,0";  // valid gets round(0.99 * 20) .. 20 = [20, 20): no documents
  try {
    build_gpt_datasets(c, corpora.opener());
    ADD_FAILURE() << "no error";
  } catch (const moe::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gives the valid split"), std::string::npos) << e.what();
  }
  c.split = "1";
  const auto splits = build_gpt_datasets(c, corpora.opener());
  EXPECT_EQ(splits[1], nullptr);
  const auto& gpt = dynamic_cast<const GPTDataset&>(*splits[0]);
  EXPECT_EQ(fs::path(gpt.cache_path("x")).parent_path(),
            fs::path(prefix) / "cache" / "GPTDataset_indices");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe::data
