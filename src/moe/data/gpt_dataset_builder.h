// From Megatron's data flags to the train / valid / test datasets, as Megatron-LM builds them
// (pretrain_gpt.py -> BlendedMegatronDatasetBuilder with one blend and a --split):
//
//   --data-path P            one corpus: a GPTDataset per split with the split's sample count.
//   --data-path P1 P2 ...    several, no weights: one epoch of each split per corpus, blended in
//                            proportion to their sizes, capped at the split's sample count.
//   --data-path w1 P1 w2 P2  weights (normalised): corpus d builds
//                            ceil(ceil(n_s w_d) (1 + surplus)) samples of split s and the blend
//                            takes ceil(n_s w_d) of them, sum_d ceil(n_s w_d) in all.
// The document ranges of every corpus come from --split (dataset_split.h), the sample counts
// n_s from the schedule (megatron_sample_counts). Splits of weight 0 have no dataset.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "moe/data/dataset_split.h"
#include "moe/data/sample_dataset.h"
#include "moe/data/token_sequences.h"

namespace moe::data {

// Megatron's get_blend_from_list: ["P1", "P2"] (no weights) or ["w1", "P1", "w2", "P2"].
// An even-length list whose odd entries are all numbers holds weights; otherwise every entry
// is a path. Weights must be positive (an error otherwise).
struct DataBlend {
  std::vector<std::string> prefixes;
  std::optional<std::vector<double>> weights;
};
DataBlend parse_data_path(std::span<const std::string> args);

// Megatron's get_train_valid_test_num_samples:
//   train = train_samples or train_iters * global_batch_size
//   valid = (train_iters / eval_interval + 1) * eval_iters * global_batch_size
//           (with skip_train: eval_iters * global_batch_size)
//   test  = eval_iters * global_batch_size
struct SampleCountArgs {
  int64_t train_iters = 0;
  std::optional<int64_t> train_samples;
  int64_t global_batch_size = 1;
  int64_t eval_interval = 1000;
  int64_t eval_iters = 100;
  bool skip_train = false;
};
std::array<std::optional<int64_t>, kNumSplits> megatron_sample_counts(const SampleCountArgs& args);

struct GPTDataConfig {
  DataBlend blend;
  std::string split = "969, 30, 1";  // Megatron's default with --data-path
  int64_t sequence_length = 0;
  int64_t seed = 1234;
  // --data-cache-path. Empty: each corpus's GPTDataset indices go to
  // <prefix>/cache/GPTDataset_indices (Megatron's default) and blends are not cached.
  std::string data_cache_path;
  double mid_level_dataset_surplus = 0.005;
  // Samples per split (megatron_sample_counts); nullopt: one epoch.
  std::array<std::optional<int64_t>, kNumSplits> num_samples;
};

// Opens a corpus by its --data-path prefix (IndexedDataset for .bin/.idx files).
using CorpusOpener = std::function<std::shared_ptr<const TokenSequences>(const std::string&)>;

// The three splits' datasets (nullptr where the split has weight 0), a GPTDataset or a
// BlendedDataset each.
std::array<std::shared_ptr<const SampleDataset>, kNumSplits> build_gpt_datasets(
    const GPTDataConfig& config, const CorpusOpener& open);

}  // namespace moe::data
