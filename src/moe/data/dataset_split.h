// Megatron's --split: how one corpus is cut into train / validation / test document ranges
// (megatron/core/datasets/blended_megatron_dataset_config.py and the builder's
// _build_megatron_dataset_splits), with the same floating-point steps so the ranges match.
//
//   "969,30,1" -> weights [969, 30, 1] -> normalised w_i = x_i / sum(x)   (numpy float64 sum)
//   bookends:    [0, w0), [w0, w0 + w1), [w0 + w1, w0 + w1 + w2)        (None where empty)
//   documents of split i: [round(begin_i * N), round(end_i * N))        (N = documents;
//                                                                         round half to even)
// Missing trailing entries are 0 ("1" = all train). Megatron pulls every run of [.0-9] out of
// the string; here the entries must be non-negative decimal numbers separated by ',' or '/'
// (spaces allowed), at most three, not all zero: anything else is an error quoting the string.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::data {

enum class Split { train = 0, valid = 1, test = 2 };
inline constexpr int kNumSplits = 3;
// "train", "valid", "test" (Megatron's Split enum names, used in cache file names).
const char* split_name(Split split);

// numpy.sum of a float64 vector (pairwise summation, as numpy's reduction adds), so that
// normalised weights equal numpy's to the last bit.
double numpy_sum(std::span<const double> values);
// Megatron's utils.normalize: w / numpy.sum(w).
std::vector<double> normalize_weights(std::span<const double> weights);

// The parsed and normalised split vector, e.g. "969,30,1" -> [0.969, 0.03, 0.001].
std::array<double, kNumSplits> parse_split(std::string_view text);

// Bookends [begin, end) of each split as fractions; nullopt for an empty split.
using SplitMatrix = std::array<std::optional<std::pair<double, double>>, kNumSplits>;
SplitMatrix split_matrix(const std::array<double, kNumSplits>& normalized);

// The document range [begin, end) of a split's bookends within `num_documents` documents.
std::pair<int64_t, int64_t> split_document_range(const std::pair<double, double>& bookends,
                                                 int64_t num_documents);

}  // namespace moe::data
