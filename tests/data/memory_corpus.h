// In-memory corpora for the dataset tests: TokenSequences whose token t of sequence s is
// s * 1000 + t (t < 1000), so a sample's tokens say which document and offset they came from,
// and a flattened stream can be rebuilt from the document order alone.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "moe/core/error.h"
#include "moe/data/token_sequences.h"

namespace moe::data::testing {

inline int64_t token_of(int64_t sequence, int64_t offset) {
  return sequence * 1000 + offset;
}

class MemoryCorpus : public TokenSequences {
 public:
  explicit MemoryCorpus(std::vector<int32_t> lengths, std::string name = "memory corpus")
      : lengths_(std::move(lengths)), name_(std::move(name)) {
    documents_.resize(lengths_.size() + 1);
    std::iota(documents_.begin(), documents_.end(), int64_t{0});
    for (int32_t l : lengths_) MOE_CHECK(l >= 0 && l < 1000, "test corpus: length ", l);
  }
  int64_t num_sequences() const override { return static_cast<int64_t>(lengths_.size()); }
  std::span<const int32_t> sequence_lengths() const override { return lengths_; }
  std::span<const int64_t> document_indices() const override { return documents_; }
  void read(int64_t sequence, int64_t offset, int64_t length, int64_t* out) const override {
    MOE_CHECK(sequence >= 0 && sequence < num_sequences() && offset >= 0 && length >= 0 &&
                  offset + length <= lengths_[size_t(sequence)],
              name_, ": read(", sequence, ", ", offset, ", ", length, ") out of range");
    for (int64_t t = 0; t < length; ++t) out[t] = token_of(sequence, offset + t);
  }
  std::string description() const override { return name_; }

  // Replaces the document bounds (to test corpora that are not one sequence per document).
  void set_document_indices(std::vector<int64_t> indices) { documents_ = std::move(indices); }

 private:
  std::vector<int32_t> lengths_;
  std::vector<int64_t> documents_;
  std::string name_;
};

// `n` documents of 0 .. max_length - 1 tokens (some empty), from `seed`.
inline std::vector<int32_t> random_lengths(int64_t n, int32_t max_length, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<int32_t> lengths(static_cast<size_t>(n));
  for (int32_t& l : lengths) l = static_cast<int32_t>(gen() % uint64_t(max_length));
  return lengths;
}

// A fresh empty folder under the temporary directory.
inline std::filesystem::path fresh_folder(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("moe_gptds_" + std::to_string(getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace moe::data::testing
