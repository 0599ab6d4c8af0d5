// Megatron-LM's indexed dataset (megatron/core/datasets/indexed_dataset.py), read through
// memory maps: the tokenized corpus `moe preprocess` and Megatron's tools/preprocess_data.py
// write, and `moe train --data-path` reads. A dataset is a pair of files next to each other:
//
//   PREFIX.bin  the tokens of every sequence, back to back, each token one element of the
//               dataset's dtype, little-endian, nothing else (no header, no padding).
//   PREFIX.idx  the index, all integers little-endian, packed (no alignment):
//     offset 0   9 bytes   magic "MMIDIDX\0\0"
//            9   uint64    version, always 1
//           17   uint8     dtype code of the .bin tokens (IndexedDType below)
//           18   uint64    S = number of sequences
//           26   uint64    D = number of document-index entries = documents + 1
//           34   int32[S]  tokens per sequence
//                int64[S]  byte offset of each sequence in the .bin (sum of the lengths
//                          before it x the dtype's size when written by a builder)
//                int64[D]  document indices: 0 = d_0 <= d_1 <= ... <= d_{D-1} = S; document k is
//                          sequences [d_k, d_{k+1}); a document may hold no sequence (Megatron's
//                          preprocess keeps an empty text that way)
//                int8[S]   (multimodal datasets only) a mode per sequence: not supported here,
//                          such a file is refused with a message saying so.
//   So the .idx is exactly 34 + 12 S + 8 D bytes.
//
// Opening checks everything a reader relies on (magic, version, dtype code, the .idx length
// against S and D, lengths >= 0, pointers non-decreasing with every sequence inside the .bin,
// document indices from 0 non-decreasing to S) and throws moe::Error naming the file and what
// is wrong; a truncated or corrupt file is an error, never a crash. The .bin may be longer than
// its sequences need (nothing Megatron writes is, but a reader does not depend on it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/data/token_sequences.h"

namespace moe::data {

// Megatron's DType codes (indexed_dataset.DType), as stored in the .idx byte at offset 17.
enum class IndexedDType : uint8_t {
  uint8 = 1,
  int8 = 2,
  int16 = 3,
  int32 = 4,
  int64 = 5,
  float64 = 6,
  float32 = 7,
  uint16 = 8,
};

// The dtype of the code, or nullopt for a code Megatron does not define.
std::optional<IndexedDType> indexed_dtype_from_code(int code);
int64_t indexed_dtype_size(IndexedDType dtype);           // bytes per token: 1, 2, 4 or 8
std::string_view indexed_dtype_name(IndexedDType dtype);  // numpy's name: "uint16", ...
// Calls f.template operator()<T>() with T the C++ type of `dtype` (uint8_t, ..., double).
template <class F>
decltype(auto) visit_indexed_dtype(IndexedDType dtype, F&& f) {
  switch (dtype) {
    case IndexedDType::uint8:
      return f.template operator()<uint8_t>();
    case IndexedDType::int8:
      return f.template operator()<int8_t>();
    case IndexedDType::int16:
      return f.template operator()<int16_t>();
    case IndexedDType::int32:
      return f.template operator()<int32_t>();
    case IndexedDType::int64:
      return f.template operator()<int64_t>();
    case IndexedDType::float64:
      return f.template operator()<double>();
    case IndexedDType::float32:
      return f.template operator()<float>();
    case IndexedDType::uint16:
      break;
  }
  return f.template operator()<uint16_t>();
}

// Megatron's DType.optimal_dtype: uint16 for a vocabulary of fewer than 65500 ids, else int32
// (also when the size is unknown).
IndexedDType optimal_indexed_dtype(std::optional<int64_t> vocab_size);

// The two files of a prefix (Megatron's get_idx_path / get_bin_path).
std::string index_file_path(const std::string& path_prefix);  // PREFIX.idx
std::string data_file_path(const std::string& path_prefix);   // PREFIX.bin

inline constexpr std::string_view kIndexMagic{"MMIDIDX\0\0", 9};
inline constexpr uint64_t kIndexVersion = 1;
inline constexpr int64_t kIndexHeaderBytes = 34;  // magic 9 + version 8 + dtype 1 + S 8 + D 8

class IndexedDataset final : public TokenSequences {
 public:
  // Opens PREFIX.idx and PREFIX.bin read-only and validates them (see above).
  explicit IndexedDataset(std::string path_prefix);
  ~IndexedDataset() override;
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;

  int64_t num_sequences() const override { return static_cast<int64_t>(lengths_.size()); }
  std::span<const int32_t> sequence_lengths() const override { return lengths_; }
  std::span<const int64_t> document_indices() const override { return document_indices_; }
  void read(int64_t sequence, int64_t offset, int64_t length, int64_t* out) const override;
  std::string description() const override { return path_prefix_; }

  // Convenience: all tokens of one sequence.
  std::vector<int64_t> sequence(int64_t sequence) const;

  IndexedDType dtype() const { return dtype_; }
  // Byte offset of each sequence in the .bin.
  std::span<const int64_t> sequence_pointers() const { return pointers_; }
  // The tokens of `sequence` as stored (length x dtype size bytes), for copying into a merge.
  std::span<const std::byte> sequence_bytes(int64_t sequence) const;
  int64_t num_tokens() const { return num_tokens_; }
  const std::string& path_prefix() const { return path_prefix_; }

 private:
  void check_sequence(int64_t sequence) const;

  std::string path_prefix_;
  IndexedDType dtype_ = IndexedDType::int32;
  // Copied out of the .idx: its arrays start at byte 34 and are never aligned for their type.
  std::vector<int32_t> lengths_;
  std::vector<int64_t> pointers_;
  std::vector<int64_t> document_indices_;
  int64_t num_tokens_ = 0;
  // The .bin mapping (none for an empty .bin: mmap refuses zero bytes).
  const std::byte* data_ = nullptr;
  size_t data_bytes_ = 0;
};

}  // namespace moe::data
