// Megatron's BlendedDataset: blending indices, per-dataset sizes and the cache
// (blended_dataset.h).
#include "moe/data/blended_dataset.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "moe/core/error.h"
#include "moe/data/gpt_dataset.h"
#include "moe/data/index_npy.h"

namespace moe::data {

BlendingIndices build_blending_indices(std::span<const double> weights, int64_t size) {
  MOE_CHECK(!weights.empty() && weights.size() < 32767, "BlendedDataset: 1 .. 32766 datasets, got ",
            weights.size());
  MOE_CHECK(size >= 0, "BlendedDataset: negative size ", size);
  BlendingIndices out;
  out.dataset_index.resize(static_cast<size_t>(size));
  out.dataset_sample_index.resize(static_cast<size_t>(size));
  std::vector<int64_t> counts(weights.size(), 0);
  for (int64_t i = 0; i < size; ++i) {
    const double at = std::max(static_cast<double>(i), 1.0);
    size_t best = 0;
    double best_error = weights[0] * at - static_cast<double>(counts[0]);
    for (size_t d = 1; d < weights.size(); ++d) {
      const double error = weights[d] * at - static_cast<double>(counts[d]);
      if (error > best_error) {
        best_error = error;
        best = d;
      }
    }
    out.dataset_index[size_t(i)] = static_cast<int16_t>(best);
    out.dataset_sample_index[size_t(i)] = counts[best]++;
  }
  return out;
}

BlendingIndices build_exhaustive_blending_indices(std::span<const int64_t> sizes) {
  MOE_CHECK(!sizes.empty() && sizes.size() < 32767, "BlendedDataset: 1 .. 32766 datasets, got ",
            sizes.size());
  int64_t total = 0;
  for (int64_t s : sizes) {
    MOE_CHECK(s >= 0, "BlendedDataset: negative dataset size ", s);
    total += s;
  }
  std::vector<double> weights(sizes.size());
  for (size_t d = 0; d < sizes.size(); ++d)
    weights[d] = static_cast<double>(sizes[d]) / static_cast<double>(total);
  std::set<size_t> unspent;  // ordered: ties go to the lowest dataset id, as Megatron's std::set
  for (size_t d = 0; d < sizes.size(); ++d)
    if (sizes[d] > 0) unspent.insert(d);
  BlendingIndices out;
  out.dataset_index.reserve(static_cast<size_t>(total));
  out.dataset_sample_index.reserve(static_cast<size_t>(total));
  std::vector<int64_t> counts(sizes.size(), 0);
  for (int64_t i = 0; !unspent.empty(); ++i) {
    const double at = std::max(static_cast<double>(i), 1.0);
    size_t best = 0;
    double best_error = std::numeric_limits<double>::lowest();
    for (size_t d : unspent) {
      const double error = weights[d] * at - static_cast<double>(counts[d]);
      if (error > best_error) {
        best_error = error;
        best = d;
      }
    }
    out.dataset_index.push_back(static_cast<int16_t>(best));
    out.dataset_sample_index.push_back(counts[best]++);
    if (counts[best] == sizes[best]) unspent.erase(best);
  }
  return out;
}

std::vector<std::array<int64_t, kNumSplits>> size_per_split_per_dataset(
    std::span<const double> weights, const std::array<std::optional<int64_t>, kNumSplits>& target,
    double surplus) {
  std::vector<std::array<int64_t, kNumSplits>> out(weights.size());
  for (size_t d = 0; d < weights.size(); ++d)
    for (int s = 0; s < kNumSplits; ++s) {
      MOE_CHECK(target[size_t(s)].has_value(), "BlendedDataset: the ",
                split_name(static_cast<Split>(s)),
                " split has weights but no sample count (Megatron requires both)");
      const double wanted = std::ceil(static_cast<double>(*target[size_t(s)]) * weights[d]);
      out[d][size_t(s)] = static_cast<int64_t>(std::ceil(wanted * (1.0 + surplus)));
    }
  return out;
}

BlendedDataset::BlendedDataset(std::vector<std::shared_ptr<const SampleDataset>> datasets,
                               std::vector<double> weights, std::optional<int64_t> size,
                               Split split, std::string cache_dir)
    : datasets_(std::move(datasets)), size_(size), split_(split), cache_dir_(std::move(cache_dir)) {
  MOE_CHECK(!datasets_.empty() && datasets_.size() == weights.size(),
            "BlendedDataset: ", datasets_.size(), " datasets and ", weights.size(), " weights");
  MOE_CHECK(datasets_.size() < 32767, "BlendedDataset: at most 32766 datasets");
  for (size_t d = 0; d < datasets_.size(); ++d) {
    MOE_CHECK(datasets_[d] != nullptr, "BlendedDataset: dataset ", d, " is missing");
    MOE_CHECK(weights[d] > 0.0, "BlendedDataset: weight ", d, " must be positive, got ",
              weights[d]);
    MOE_CHECK(datasets_[d]->sample_length() == datasets_[0]->sample_length(),
              "BlendedDataset: datasets of different sample lengths");
    MOE_CHECK(size || weights[d] == std::floor(weights[d]),
              "BlendedDataset: without a size, weights are sample counts (whole numbers), got ",
              weights[d]);
  }
  weights_ = size ? normalize_weights(weights) : weights;

  nlohmann::ordered_json desc;
  desc["class"] = "BlendedDataset";
  desc["datasets"] = nlohmann::ordered_json::array();
  for (const auto& dataset : datasets_)
    desc["datasets"].push_back(nlohmann::ordered_json::parse(dataset->description()));
  desc["split"] = split_name(split);
  desc["weights"] = weights_;
  desc["size"] = size ? nlohmann::ordered_json(*size) : nullptr;
  description_ = desc.dump(4);
  hash_ = description_hash(description_);

  if (!cache_dir_.empty() && load_cache()) {
    loaded_from_cache_ = true;
    return;
  }
  if (size) {
    indices_ = build_blending_indices(weights_, *size);
  } else {
    std::vector<int64_t> counts(weights_.begin(), weights_.end());
    indices_ = build_exhaustive_blending_indices(counts);
  }
  std::vector<int64_t> taken(datasets_.size(), 0);
  for (int16_t d : indices_.dataset_index) ++taken[size_t(d)];
  for (size_t d = 0; d < datasets_.size(); ++d)
    MOE_CHECK(taken[d] <= datasets_[d]->size(), "BlendedDataset: the ", split_name(split),
              " blend takes ", taken[d], " samples from dataset ", d, ", which holds only ",
              datasets_[d]->size(), " (raise the mid-level dataset surplus)");
  if (!cache_dir_.empty()) save_cache();
}

std::string BlendedDataset::cache_path(const std::string& suffix) const {
  MOE_CHECK(!cache_dir_.empty(), "BlendedDataset: no cache folder");
  return (std::filesystem::path(cache_dir_) /
          (hash_ + "-BlendedDataset-" + split_name(split_) + "-" + suffix))
      .string();
}

void BlendedDataset::save_cache() const {
  std::error_code error;
  std::filesystem::create_directories(cache_dir_, error);
  MOE_CHECK(!error, "BlendedDataset: cannot create the index cache folder ", cache_dir_, ": ",
            error.message());
  const std::vector<int64_t> dataset_index(indices_.dataset_index.begin(),
                                           indices_.dataset_index.end());
  nlohmann::ordered_json checksums;
  checksums["dataset_index.npy"] =
      write_index_npy(cache_path("dataset_index.npy"), IndexDType::i16, {size()}, dataset_index);
  checksums["dataset_sample_index.npy"] =
      write_index_npy(cache_path("dataset_sample_index.npy"), IndexDType::i64, {size()},
                      indices_.dataset_sample_index);
  write_index_cache_manifest([this](const std::string& f) { return cache_path(f); }, checksums,
                             description_);
}

bool BlendedDataset::load_cache() {
  const char* files[] = {"description.txt", "dataset_index.npy", "dataset_sample_index.npy",
                         "checksums.json"};
  for (const char* f : files)
    if (!std::filesystem::is_regular_file(cache_path(f))) return false;
  const std::string refuse = " Remove the files " + cache_path("*") + " to rebuild the indices.";
  const auto read_text = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  MOE_CHECK(read_text(cache_path("description.txt")) == description_,
            "BlendedDataset: the index cache ", cache_path("description.txt"),
            " describes another blend than this one.", refuse);
  nlohmann::json checksums;
  try {
    checksums = nlohmann::json::parse(read_text(cache_path("checksums.json")));
  } catch (const nlohmann::json::exception& e) {
    MOE_FAIL("BlendedDataset: ", cache_path("checksums.json"), " is not valid JSON.", refuse);
  }
  const char* names[] = {"dataset_index.npy", "dataset_sample_index.npy"};
  std::vector<IndexArray> arrays = read_checked_index_files(
      "BlendedDataset", names, checksums, [this](const std::string& f) { return cache_path(f); },
      refuse);
  const size_t n = arrays[0].values.size();
  bool good = arrays[0].shape.size() == 1 && arrays[1].shape == arrays[0].shape &&
              (!size_ || static_cast<int64_t>(n) == *size_);
  for (size_t i = 0; good && i < n; ++i) {
    const int64_t d = arrays[0].values[i];
    good = d >= 0 && d < static_cast<int64_t>(datasets_.size()) && arrays[1].values[i] >= 0 &&
           arrays[1].values[i] < datasets_[size_t(d)]->size();
  }
  MOE_CHECK(good, "BlendedDataset: the index cache ", cache_path("dataset_index.npy"),
            " does not hold the indices this blend needs.", refuse);
  indices_.dataset_index.assign(arrays[0].values.begin(), arrays[0].values.end());
  indices_.dataset_sample_index = std::move(arrays[1].values);
  return true;
}

void BlendedDataset::read_sample(int64_t index, int64_t* out) const {
  MOE_CHECK(index >= 0 && index < size(), "BlendedDataset: sample ", index, " outside [0, ", size(),
            ")");
  const auto i = static_cast<size_t>(index);
  datasets_[size_t(indices_.dataset_index[i])]->read_sample(indices_.dataset_sample_index[i], out);
}

}  // namespace moe::data
