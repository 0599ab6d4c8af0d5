// Megatron's dataset building from --data-path / --split / sample counts
// (gpt_dataset_builder.h).
#include "moe/data/gpt_dataset_builder.h"

#include <cstdlib>
#include <filesystem>

#include "moe/core/error.h"
#include "moe/data/blended_dataset.h"
#include "moe/data/gpt_dataset.h"

namespace moe::data {

namespace {

std::optional<double> as_number(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return std::nullopt;
  return value;
}

std::string strip(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t\n");
  const size_t last = text.find_last_not_of(" \t\n");
  return first == std::string::npos ? "" : text.substr(first, last - first + 1);
}

}  // namespace

DataBlend parse_data_path(std::span<const std::string> args) {
  MOE_CHECK(!args.empty(), "--data-path: no dataset given");
  DataBlend blend;
  if (args.size() % 2 == 0) {
    std::vector<double> weights;
    bool all_numbers = true;
    for (size_t i = 0; i < args.size(); i += 2) {
      const std::optional<double> w = as_number(strip(args[i]));
      if (!w) all_numbers = false;
      weights.push_back(w.value_or(0.0));
    }
    if (all_numbers) {
      for (size_t i = 0; i < weights.size(); ++i)
        MOE_CHECK(weights[i] > 0.0, "--data-path: the weight of ", args[2 * i + 1],
                  " must be positive, got ", args[2 * i]);
      for (size_t i = 1; i < args.size(); i += 2) blend.prefixes.push_back(strip(args[i]));
      blend.weights = std::move(weights);
      return blend;
    }
  }
  for (const std::string& a : args) {
    MOE_CHECK(!as_number(strip(a)), "--data-path: \"", a,
              "\" looks like a weight, but the list is not weight/path pairs (", args.size(),
              " entries)");
    blend.prefixes.push_back(strip(a));
  }
  return blend;
}

std::array<std::optional<int64_t>, kNumSplits> megatron_sample_counts(const SampleCountArgs& a) {
  MOE_CHECK(a.global_batch_size >= 1, "--global-batch-size must be positive");
  MOE_CHECK(a.eval_interval >= 1, "--eval-interval must be positive");
  const int64_t train = a.train_samples ? *a.train_samples : a.train_iters * a.global_batch_size;
  const int64_t eval_iters =
      a.skip_train ? a.eval_iters : (a.train_iters / a.eval_interval + 1) * a.eval_iters;
  return {train, eval_iters * a.global_batch_size, a.eval_iters * a.global_batch_size};
}

std::array<std::shared_ptr<const SampleDataset>, kNumSplits> build_gpt_datasets(
    const GPTDataConfig& config, const CorpusOpener& open) {
  const DataBlend& blend = config.blend;
  MOE_CHECK(!blend.prefixes.empty(), "--data-path: no dataset given");
  MOE_CHECK(!blend.weights || blend.weights->size() == blend.prefixes.size(),
            "--data-path: ", blend.prefixes.size(), " paths but ",
            blend.weights ? blend.weights->size() : 0, " weights");
  const SplitMatrix matrix = split_matrix(parse_split(config.split));

  // The split datasets of one corpus with per-split sample counts.
  const auto build_corpus = [&](const std::string& prefix,
                                const std::array<std::optional<int64_t>, kNumSplits>& counts) {
    std::shared_ptr<const TokenSequences> corpus = open(prefix);
    MOE_CHECK(corpus != nullptr, "--data-path: cannot open ", prefix);
    GPTDatasetConfig gpt;
    gpt.sequence_length = config.sequence_length;
    gpt.random_seed = config.seed;
    gpt.split = config.split;
    gpt.cache_dir = !config.data_cache_path.empty()
                        ? config.data_cache_path
                        : (std::filesystem::path(prefix) / "cache" / "GPTDataset_indices").string();
    std::array<std::shared_ptr<const SampleDataset>, kNumSplits> out;
    for (int s = 0; s < kNumSplits; ++s) {
      if (!matrix[size_t(s)]) continue;
      const auto range = split_document_range(*matrix[size_t(s)], corpus->num_sequences());
      MOE_CHECK(range.second > range.first, "--split \"", config.split, "\" gives the ",
                split_name(static_cast<Split>(s)), " split of ", prefix, " no documents (of ",
                corpus->num_sequences(), "); give that split weight 0 or use more data");
      out[size_t(s)] = std::make_shared<GPTDataset>(corpus, prefix, range, counts[size_t(s)],
                                                    static_cast<Split>(s), gpt);
    }
    return out;
  };

  if (blend.prefixes.size() == 1 && !blend.weights)
    return build_corpus(blend.prefixes[0], config.num_samples);

  std::optional<std::vector<double>> weights;
  std::vector<std::array<int64_t, kNumSplits>> target, buffer;
  if (blend.weights) {
    weights = normalize_weights(*blend.weights);
    std::array<std::optional<int64_t>, kNumSplits> used;  // splits that exist need a count
    for (int s = 0; s < kNumSplits; ++s)
      used[size_t(s)] = matrix[size_t(s)] ? config.num_samples[size_t(s)] : int64_t{0};
    target = size_per_split_per_dataset(*weights, used, 0.0);
    buffer = size_per_split_per_dataset(*weights, used, config.mid_level_dataset_surplus);
  }
  std::vector<std::array<std::shared_ptr<const SampleDataset>, kNumSplits>> per_corpus;
  for (size_t d = 0; d < blend.prefixes.size(); ++d) {
    std::array<std::optional<int64_t>, kNumSplits> counts;  // nullopt: one epoch
    if (weights)
      for (int s = 0; s < kNumSplits; ++s) counts[size_t(s)] = buffer[d][size_t(s)];
    per_corpus.push_back(build_corpus(blend.prefixes[d], counts));
  }

  std::array<std::shared_ptr<const SampleDataset>, kNumSplits> out;
  for (int s = 0; s < kNumSplits; ++s) {
    if (!matrix[size_t(s)]) continue;
    std::vector<std::shared_ptr<const SampleDataset>> parts;
    for (const auto& c : per_corpus) parts.push_back(c[size_t(s)]);
    std::vector<double> split_weights;
    std::optional<int64_t> size;
    if (weights) {
      split_weights = *weights;
      size = 0;
      for (const auto& t : target) *size += t[size_t(s)];
    } else {
      // Weighted by the corpora's one-epoch sizes; capped at the requested count.
      int64_t total = 0;
      for (const auto& p : parts) {
        split_weights.push_back(static_cast<double>(p->size()));
        total += p->size();
      }
      if (config.num_samples[size_t(s)]) size = std::min(*config.num_samples[size_t(s)], total);
    }
    out[size_t(s)] =
        std::make_shared<BlendedDataset>(std::move(parts), std::move(split_weights), size,
                                         static_cast<Split>(s), config.data_cache_path);
  }
  return out;
}

}  // namespace moe::data
