// Writing Megatron's indexed dataset (indexed_dataset.h has the byte layout), byte for byte
// what megatron.core.datasets.indexed_dataset.IndexedDatasetBuilder writes for the same
// sequences: the .bin is the tokens back to back in the chosen dtype, the .idx the header,
// lengths, pointers (running sum of lengths x dtype size) and document indices.
//
// Both files are written under temporary names in the target folder (io::AtomicFile) and only
// finalize() renames them into place, .bin first and .idx last: a crash or an exception leaves
// the previous files (or none), never a half-written one, and a reader that finds the new .idx
// also finds its .bin.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "moe/data/indexed_dataset.h"

namespace moe::io {
class AtomicFile;
}

namespace moe::data {

class IndexedDatasetWriter {
 public:
  // Starts PREFIX.bin (under a temporary name); throws naming the path if the folder is
  // missing or not writable.
  IndexedDatasetWriter(std::string path_prefix, IndexedDType dtype);
  ~IndexedDatasetWriter();  // without finalize(): removes the temporaries, writes nothing
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;

  // Appends one sequence (Megatron's add_item). Every token must be representable in the
  // dtype (an integer in its range; for float32/float64 exactly representable), else an
  // error naming the token, its position and the dtype. Empty sequences are allowed.
  void add_sequence(std::span<const int64_t> tokens);
  // Closes the current document: the sequences added since the last end_document() (possibly
  // none, an empty document, as in Megatron's builder) form one document.
  void end_document();
  // Appends every sequence and document of `dataset` (Megatron's add_index, used by its
  // tools/merge_datasets.py). The dtypes must be the same.
  void add_dataset(const IndexedDataset& dataset);

  // Writes the .idx and renames both files into place. Sequences added after the last
  // end_document() are closed into a final document first, so the index always ends at S.
  void finalize();

  int64_t num_sequences() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t num_documents() const { return static_cast<int64_t>(document_indices_.size()) - 1; }
  int64_t num_tokens() const { return num_tokens_; }
  IndexedDType dtype() const { return dtype_; }
  const std::string& path_prefix() const { return path_prefix_; }

 private:
  void append_bytes(const void* bytes, size_t size);
  void flush();
  void check_open() const;

  std::string path_prefix_;
  IndexedDType dtype_;
  std::unique_ptr<io::AtomicFile> data_file_;
  std::vector<std::byte> buffer_;  // .bin bytes not yet handed to the file
  std::vector<int32_t> lengths_;
  std::vector<int64_t> document_indices_{0};
  int64_t num_tokens_ = 0;
  bool finalized_ = false;
};

// Megatron's tools/merge_datasets.py: the datasets at `input_prefixes`, in that order, into
// one at `output_prefix` (documents and sequences kept, pointers recomputed). All inputs must
// have the same dtype; the output takes it.
void merge_indexed_datasets(const std::vector<std::string>& input_prefixes,
                            const std::string& output_prefix);

}  // namespace moe::data
