#include "moe/data/indexed_dataset_writer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <type_traits>

#include "moe/core/error.h"
#include "moe/io/atomic_file.h"

namespace moe::data {
namespace {

constexpr size_t kFlushBytes = size_t{1} << 20;  // .bin bytes gathered per write(2)

// Whether `token` survives a round trip through T (the writer never rounds or wraps ids).
template <class T>
bool representable(int64_t token) {
  if constexpr (std::is_floating_point_v<T>) {
    const T value = static_cast<T>(token);
    // Exact only if converting back gives the same integer; |value| < 2^63 keeps that cast
    // defined.
    return std::fabs(static_cast<double>(value)) < 9.2e18 && static_cast<int64_t>(value) == token;
  } else {
    return token >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
           (std::is_same_v<T, int64_t> ||
            token <= static_cast<int64_t>(std::numeric_limits<T>::max()));
  }
}

}  // namespace

IndexedDatasetWriter::IndexedDatasetWriter(std::string path_prefix, IndexedDType dtype)
    : path_prefix_(std::move(path_prefix)), dtype_(dtype) {
  (void)indexed_dtype_size(dtype_);  // throws for a code Megatron does not define
  data_file_ = std::make_unique<io::AtomicFile>(data_file_path(path_prefix_));
  buffer_.reserve(kFlushBytes);
}

IndexedDatasetWriter::~IndexedDatasetWriter() = default;  // AtomicFile removes its temporary

void IndexedDatasetWriter::check_open() const {
  MOE_CHECK(!finalized_, path_prefix_, ": the indexed dataset was already finalized");
}

void IndexedDatasetWriter::flush() {
  if (buffer_.empty()) return;
  data_file_->write(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void IndexedDatasetWriter::append_bytes(const void* bytes, size_t size) {
  if (buffer_.size() + size > kFlushBytes) flush();
  if (size >= kFlushBytes) {
    data_file_->write(bytes, size);
    return;
  }
  const auto* p = static_cast<const std::byte*>(bytes);
  buffer_.insert(buffer_.end(), p, p + size);
}

void IndexedDatasetWriter::add_sequence(std::span<const int64_t> tokens) {
  check_open();
  MOE_CHECK(tokens.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
            data_file_path(path_prefix_), ": a sequence of ", tokens.size(),
            " tokens does not fit the index's int32 length");
  visit_indexed_dtype(dtype_, [&]<class T>() {
    T converted[256];  // converted in blocks so a long sequence needs no temporary vector
    for (size_t start = 0; start < tokens.size(); start += std::size(converted)) {
      const size_t n = std::min(std::size(converted), tokens.size() - start);
      for (size_t i = 0; i < n; ++i) {
        const int64_t token = tokens[start + i];
        MOE_CHECK(representable<T>(token), data_file_path(path_prefix_), ": token ", token,
                  " at position ", start + i, " of sequence ", lengths_.size(),
                  " does not fit the dataset dtype ", indexed_dtype_name(dtype_));
        converted[i] = static_cast<T>(token);
      }
      append_bytes(converted, n * sizeof(T));
    }
  });
  lengths_.push_back(static_cast<int32_t>(tokens.size()));
  num_tokens_ += static_cast<int64_t>(tokens.size());
}

void IndexedDatasetWriter::end_document() {
  check_open();
  document_indices_.push_back(num_sequences());
}

void IndexedDatasetWriter::add_dataset(const IndexedDataset& dataset) {
  check_open();
  MOE_CHECK(dataset.dtype() == dtype_, "cannot add ", dataset.path_prefix(), " (dtype ",
            indexed_dtype_name(dataset.dtype()), ") to ", path_prefix_, " (dtype ",
            indexed_dtype_name(dtype_), ")");
  // Megatron's add_index: the other lengths appended, its document indices shifted by the
  // sequences already here (its leading 0 dropped), its tokens copied as they are.
  const int64_t shift = num_sequences();
  for (int64_t s = 0; s < dataset.num_sequences(); ++s) {
    const std::span<const std::byte> bytes = dataset.sequence_bytes(s);
    append_bytes(bytes.data(), bytes.size());
  }
  const std::span<const int32_t> lengths = dataset.sequence_lengths();
  lengths_.insert(lengths_.end(), lengths.begin(), lengths.end());
  const std::span<const int64_t> documents = dataset.document_indices();
  for (size_t d = 1; d < documents.size(); ++d) document_indices_.push_back(shift + documents[d]);
  num_tokens_ += dataset.num_tokens();
}

void IndexedDatasetWriter::finalize() {
  check_open();
  if (document_indices_.back() != num_sequences()) end_document();
  flush();

  // The index, in the order indexed_dataset.h lists it.
  const auto sequences = static_cast<uint64_t>(lengths_.size());
  const auto entries = static_cast<uint64_t>(document_indices_.size());
  std::vector<std::byte> index(kIndexHeaderBytes + 12 * sequences + 8 * entries);
  std::byte* p = index.data();
  const auto put = [&p](const void* bytes, size_t size) {
    if (size > 0) std::memcpy(p, bytes, size);
    p += size;
  };
  const uint64_t version = kIndexVersion;
  const auto code = static_cast<uint8_t>(dtype_);
  put(kIndexMagic.data(), kIndexMagic.size());
  put(&version, sizeof version);
  put(&code, sizeof code);
  put(&sequences, sizeof sequences);
  put(&entries, sizeof entries);
  put(lengths_.data(), lengths_.size() * sizeof(int32_t));
  // Pointers: the running byte offset, Megatron's _sequence_pointers.
  const int64_t item = indexed_dtype_size(dtype_);
  int64_t pointer = 0;
  for (const int32_t length : lengths_) {
    put(&pointer, sizeof pointer);
    pointer += int64_t{length} * item;
  }
  put(document_indices_.data(), document_indices_.size() * sizeof(int64_t));

  io::AtomicFile index_file(index_file_path(path_prefix_));
  index_file.write(index.data(), index.size());
  data_file_->commit();  // .bin first: a new .idx never points at an old .bin
  index_file.commit();
  finalized_ = true;
}

void merge_indexed_datasets(const std::vector<std::string>& input_prefixes,
                            const std::string& output_prefix) {
  MOE_CHECK(!input_prefixes.empty(), "merging into ", output_prefix, ": no input datasets");
  std::unique_ptr<IndexedDatasetWriter> writer;
  for (const std::string& prefix : input_prefixes) {
    const IndexedDataset dataset(prefix);
    if (!writer) writer = std::make_unique<IndexedDatasetWriter>(output_prefix, dataset.dtype());
    writer->add_dataset(dataset);
  }
  writer->finalize();
}

}  // namespace moe::data
