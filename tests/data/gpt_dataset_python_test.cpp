// The C++ half of tests/data/check_gpt_dataset_with_python.py (run by scripts/run-tests.sh):
// with MOE_GPT_DATASET_PY_DIR set, reads the cases Python wrote to spec.json, and writes
//   random_<k>.npy           numpy_random draws (permutation, then randint, then raw words)
//   <case>/cache/            the GPTDataset / BlendedDataset index caches (numpy's .npy)
//   <case>/samples_<split>.npy  the first samples' tokens, int64 [K, S + 1]
// for Python to compare with numpy and with its own implementation of Megatron's algorithms.
// Without the variable the test is skipped.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include "data/memory_corpus.h"
#include "moe/core/json_file.h"
#include "moe/data/gpt_dataset_builder.h"
#include "moe/data/index_npy.h"
#include "moe/data/numpy_random.h"

namespace moe::data {
namespace {

namespace fs = std::filesystem;

TEST(GPTDatasetPython, WritesIndicesForNumpy) {
  const char* env = std::getenv("MOE_GPT_DATASET_PY_DIR");
  if (env == nullptr) GTEST_SKIP() << "MOE_GPT_DATASET_PY_DIR not set (run by the Python check)";
  const fs::path dir(env);
  const nlohmann::json spec = read_json_file((dir / "spec.json").string(), "dataset check spec");

  int k = 0;
  for (const auto& r : spec.at("random")) {
    NumpyRandomState random(r.at("seed").get<int64_t>());
    std::vector<int64_t> draws = random.permutation(r.at("permutation").get<int64_t>());
    const auto& ri = r.at("randint");
    for (int64_t v :
         random.randint(ri[0].get<int64_t>(), ri[1].get<int64_t>(), ri[2].get<int64_t>()))
      draws.push_back(v);
    for (int i = 0; i < 5; ++i) draws.push_back(random.next_uint32());
    write_index_npy((dir / ("random_" + std::to_string(k++) + ".npy")).string(), IndexDType::i64,
                    {static_cast<int64_t>(draws.size())}, draws);
  }

  for (const auto& c : spec.at("cases")) {
    const std::string name = c.at("name");
    SCOPED_TRACE(name);
    std::map<std::string, std::shared_ptr<testing::MemoryCorpus>> corpora;
    for (const auto& [prefix, lengths] : c.at("corpora").items())
      corpora[prefix] =
          std::make_shared<testing::MemoryCorpus>(lengths.get<std::vector<int32_t>>(), prefix);
    GPTDataConfig config;
    config.blend = parse_data_path(c.at("data_path").get<std::vector<std::string>>());
    config.split = c.at("split");
    config.sequence_length = c.at("seq_length");
    config.seed = c.at("seed");
    config.data_cache_path = (dir / name / "cache").string();
    for (int s = 0; s < kNumSplits; ++s)
      if (!c.at("num_samples")[size_t(s)].is_null())
        config.num_samples[size_t(s)] = c.at("num_samples")[size_t(s)].get<int64_t>();
    const auto splits = build_gpt_datasets(
        config, [&](const std::string& p) -> std::shared_ptr<const TokenSequences> {
          return corpora.at(p);
        });
    for (int s = 0; s < kNumSplits; ++s) {
      if (!splits[size_t(s)]) continue;
      const SampleDataset& ds = *splits[size_t(s)];
      const int64_t rows = std::min<int64_t>(ds.size(), c.at("samples_to_dump").get<int64_t>());
      std::vector<int64_t> tokens(static_cast<size_t>(rows * ds.sample_length()));
      for (int64_t i = 0; i < rows; ++i) ds.read_sample(i, tokens.data() + i * ds.sample_length());
      write_index_npy(
          (dir / name / (std::string("samples_") + split_name(static_cast<Split>(s)) + ".npy"))
              .string(),
          IndexDType::i64, {rows, ds.sample_length()}, tokens);
    }
  }
}

}  // namespace
}  // namespace moe::data
