// Megatron's BlendedDataset (megatron/core/datasets/blended_dataset.py, helpers.cpp): several
// datasets read as one, sample i taken from dataset dataset_index[i] at its sample
// dataset_sample_index[i], so that every prefix of the blend follows the weights.
//
// build_blending_indices (weights w normalised, `size` samples): sample i goes to the dataset
// with the largest error  w_d * max(i, 1) - count_d  (first such d on ties); count_d += 1.
// Then |count_d(n) - w_d n| stays within about one sample for every prefix n.
// build_exhaustive_blending_indices (no size: weights are exact per-dataset counts c_d): the same
// error rule over the datasets not yet used up, with w_d = c_d / sum(c), until every dataset has
// given exactly c_d samples.
//
// Megatron's per-dataset sample counts for a blend of weights w (normalised) and a split of
// `target` samples (blended_megatron_dataset_builder.py, _get_size_per_split_per_dataset):
//   target_d = ceil(target * w_d)                          samples drawn from dataset d,
//   built_d  = ceil(target_d * (1 + surplus))             samples its GPTDataset builds
//                                                          (surplus = 0.005, Megatron's margin),
//   blend size = sum_d target_d.
//
// Cache (only with a cache folder, as Megatron caches blends only with --data-cache-path):
// <hash>-BlendedDataset-<split>-{dataset_index.npy (int16), dataset_sample_index.npy (int64),
// checksums.json, description.txt}, written and checked as GPTDataset's (gpt_dataset.h).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "moe/data/dataset_split.h"
#include "moe/data/sample_dataset.h"

namespace moe::data {

struct BlendingIndices {
  std::vector<int16_t> dataset_index;
  std::vector<int64_t> dataset_sample_index;
};

BlendingIndices build_blending_indices(std::span<const double> normalized_weights, int64_t size);
BlendingIndices build_exhaustive_blending_indices(std::span<const int64_t> sizes);

// [dataset][split] sample counts: ceil(ceil(target_s * w_d) * (1 + surplus)) (surplus 0 gives
// the target counts). A split without a target (nullopt) is an error: Megatron requires a size
// wherever weights are given.
std::vector<std::array<int64_t, kNumSplits>> size_per_split_per_dataset(
    std::span<const double> normalized_weights,
    const std::array<std::optional<int64_t>, kNumSplits>& target_per_split, double surplus = 0.0);

class BlendedDataset : public SampleDataset {
 public:
  // With `size`: `weights` (any positive scale) are normalised and `size` samples blended.
  // Without: `weights` are the exact per-dataset sample counts (whole numbers), blended
  // exhaustively. Every dataset must hold the samples the blend takes from it.
  BlendedDataset(std::vector<std::shared_ptr<const SampleDataset>> datasets,
                 std::vector<double> weights, std::optional<int64_t> size, Split split,
                 std::string cache_dir = "");

  int64_t size() const override { return static_cast<int64_t>(indices_.dataset_index.size()); }
  int64_t sample_length() const override { return datasets_.front()->sample_length(); }
  void read_sample(int64_t index, int64_t* out) const override;
  const std::string& description() const override { return description_; }

  const BlendingIndices& indices() const { return indices_; }
  const std::vector<double>& weights() const { return weights_; }
  const std::vector<std::shared_ptr<const SampleDataset>>& datasets() const { return datasets_; }
  bool loaded_from_cache() const { return loaded_from_cache_; }
  std::string cache_path(const std::string& suffix) const;

 private:
  bool load_cache();
  void save_cache() const;

  std::vector<std::shared_ptr<const SampleDataset>> datasets_;
  std::vector<double> weights_;
  std::optional<int64_t> size_;
  Split split_;
  std::string cache_dir_;
  std::string description_;
  std::string hash_;
  BlendingIndices indices_;
  bool loaded_from_cache_ = false;
};

}  // namespace moe::data
