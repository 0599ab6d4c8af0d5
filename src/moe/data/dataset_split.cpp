// Megatron's --split parsing and per-split document ranges (dataset_split.h).
#include "moe/data/dataset_split.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "moe/core/error.h"

namespace moe::data {

const char* split_name(Split split) {
  switch (split) {
    case Split::train:
      return "train";
    case Split::valid:
      return "valid";
    case Split::test:
      return "test";
  }
  return "?";
}

namespace {

// numpy's pairwise_sum for float64: blocks of up to 128 summed in eight interleaved lanes,
// larger ranges halved (at a multiple of 8) and the halves added.
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) sum += a[i];
    return sum;
  }
  if (n <= 128) {
    double lane[8];
    for (size_t j = 0; j < 8; ++j) lane[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (size_t j = 0; j < 8; ++j) lane[j] += a[i + j];
    double sum =
        ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; i < n; ++i) sum += a[i];
    return sum;
  }
  size_t half = n / 2;
  half -= half % 8;
  return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

}  // namespace

double numpy_sum(std::span<const double> values) {
  return pairwise_sum(values.data(), values.size());
}

std::vector<double> normalize_weights(std::span<const double> weights) {
  const double total = numpy_sum(weights);
  std::vector<double> out(weights.begin(), weights.end());
  for (double& w : out) w /= total;
  return out;
}

std::array<double, kNumSplits> parse_split(std::string_view text) {
  const std::string quoted = "--split \"" + std::string(text) + "\"";
  std::vector<double> entries;
  size_t pos = 0;
  while (true) {
    const size_t end = text.find_first_of(",/", pos);
    std::string entry(text.substr(pos, end == std::string_view::npos ? end : end - pos));
    const size_t first = entry.find_first_not_of(" \t");
    const size_t last = entry.find_last_not_of(" \t");
    entry = first == std::string::npos ? "" : entry.substr(first, last - first + 1);
    // A plain non-negative decimal: digits with at most one '.', at least one digit.
    const bool digits_only =
        !entry.empty() && entry.find_first_not_of("0123456789.") == std::string::npos;
    const size_t dots = static_cast<size_t>(std::count(entry.begin(), entry.end(), '.'));
    MOE_CHECK(digits_only && dots <= 1 && entry != ".", quoted, ": entry \"", entry,
              "\" is not a non-negative number (expected e.g. \"969,30,1\": train, valid, test "
              "weights separated by ',')");
    entries.push_back(std::strtod(entry.c_str(), nullptr));
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  MOE_CHECK(entries.size() <= kNumSplits, quoted, " has ", entries.size(),
            " entries; at most 3 (train, valid, test)");
  entries.resize(kNumSplits, 0.0);
  MOE_CHECK(numpy_sum(entries) > 0.0, quoted, ": the weights sum to zero");
  const std::vector<double> normalized = normalize_weights(entries);
  return {normalized[0], normalized[1], normalized[2]};
}

SplitMatrix split_matrix(const std::array<double, kNumSplits>& normalized) {
  // Cumulative sums as Python's reduce adds them: 0, w0, w0 + w1, (w0 + w1) + w2.
  double bookend[kNumSplits + 1] = {0.0};
  for (int i = 0; i < kNumSplits; ++i) bookend[i + 1] = bookend[i] + normalized[size_t(i)];
  SplitMatrix matrix;
  for (int i = 0; i < kNumSplits; ++i)
    if (bookend[i + 1] > bookend[i]) matrix[size_t(i)] = std::make_pair(bookend[i], bookend[i + 1]);
  return matrix;
}

std::pair<int64_t, int64_t> split_document_range(const std::pair<double, double>& bookends,
                                                 int64_t num_documents) {
  // Python's round(): to nearest, ties to even, which std::nearbyint does in the default mode.
  const auto at = [&](double fraction) {
    return static_cast<int64_t>(std::nearbyint(fraction * static_cast<double>(num_documents)));
  };
  return {at(bookends.first), at(bookends.second)};
}

}  // namespace moe::data
