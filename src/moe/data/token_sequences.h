// What a GPT dataset reads from a tokenized corpus: Megatron's low-level dataset seen through
// its index. The corpus holds `num_sequences()` token sequences; documents are consecutive
// runs of sequences, document d = sequences [document_indices()[d], document_indices()[d+1]).
// `moe preprocess` (like Megatron's tools/preprocess_data.py without sentence splitting) writes
// one sequence per document, and a document whose text gives no tokens as a document of no
// sequences (the index repeats a value: 0, 1, 1, 2), byte for byte as Megatron does. The GPT
// dataset, like Megatron's, walks sequences (data/gpt_dataset.h).
//
// Implemented by IndexedDataset (indexed_dataset.h: Megatron's memory-mapped .bin/.idx) and by
// in-memory corpora in tests. read() is const and safe from several threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace moe::data {

class TokenSequences {
 public:
  virtual ~TokenSequences() = default;

  virtual int64_t num_sequences() const = 0;
  // Tokens per sequence, num_sequences() entries.
  virtual std::span<const int32_t> sequence_lengths() const = 0;
  // num_documents() + 1 entries: 0, ..., num_sequences().
  virtual std::span<const int64_t> document_indices() const = 0;
  int64_t num_documents() const { return static_cast<int64_t>(document_indices().size()) - 1; }

  // Tokens [offset, offset + length) of `sequence` into out[0 .. length), widened to int64.
  // Out-of-range arguments are an error naming the dataset (description()).
  virtual void read(int64_t sequence, int64_t offset, int64_t length, int64_t* out) const = 0;

  // For messages and cache descriptions: the path prefix of the files, or a test's name.
  virtual std::string description() const = 0;
};

}  // namespace moe::data
