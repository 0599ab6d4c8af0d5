#include "moe/data/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "moe/core/error.h"

namespace moe::data {

// The format is little-endian and read with memcpy; a big-endian host would need byte swaps.
static_assert(std::endian::native == std::endian::little,
              "the indexed dataset reader assumes a little-endian host");

std::optional<IndexedDType> indexed_dtype_from_code(int code) {
  if (code < 1 || code > 8) return std::nullopt;
  return static_cast<IndexedDType>(code);
}

int64_t indexed_dtype_size(IndexedDType dtype) {
  switch (dtype) {
    case IndexedDType::uint8:
    case IndexedDType::int8:
      return 1;
    case IndexedDType::int16:
    case IndexedDType::uint16:
      return 2;
    case IndexedDType::int32:
    case IndexedDType::float32:
      return 4;
    case IndexedDType::int64:
    case IndexedDType::float64:
      return 8;
  }
  MOE_FAIL("indexed dataset: invalid dtype code ", static_cast<int>(dtype));
}

std::string_view indexed_dtype_name(IndexedDType dtype) {
  switch (dtype) {
    case IndexedDType::uint8:
      return "uint8";
    case IndexedDType::int8:
      return "int8";
    case IndexedDType::int16:
      return "int16";
    case IndexedDType::int32:
      return "int32";
    case IndexedDType::int64:
      return "int64";
    case IndexedDType::float64:
      return "float64";
    case IndexedDType::float32:
      return "float32";
    case IndexedDType::uint16:
      return "uint16";
  }
  MOE_FAIL("indexed dataset: invalid dtype code ", static_cast<int>(dtype));
}

IndexedDType optimal_indexed_dtype(std::optional<int64_t> vocab_size) {
  // Megatron's threshold is 65500, not 65536: a margin below the uint16 limit.
  return vocab_size && *vocab_size < 65500 ? IndexedDType::uint16 : IndexedDType::int32;
}

std::string index_file_path(const std::string& path_prefix) {
  return path_prefix + ".idx";
}
std::string data_file_path(const std::string& path_prefix) {
  return path_prefix + ".bin";
}

namespace {

// A whole file mapped read-only. The descriptor is closed right after mmap (the mapping keeps
// the file alive). A zero-byte file has no mapping (mmap refuses length 0).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path, const char* what) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    MOE_CHECK(fd >= 0, "cannot open ", what, " ", path, ": ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      MOE_FAIL("cannot stat ", what, " ", path, ": ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      MOE_FAIL(what, " ", path, " is not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
      const int err = errno;
      ::close(fd);
      MOE_CHECK(p != MAP_FAILED, "cannot map ", what, " ", path, " (", size_,
                " bytes): ", std::strerror(err));
      data_ = static_cast<const std::byte*>(p);
    } else {
      ::close(fd);
    }
  }
  ~MappedFile() { unmap(); }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Hands the mapping over to the caller (who munmaps it).
  std::pair<const std::byte*, size_t> release() {
    auto mapping = std::make_pair(data_, size_);
    data_ = nullptr;
    size_ = 0;
    return mapping;
  }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void unmap() noexcept {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
  }
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

template <class T>
T load(const std::byte* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

template <class T>
std::vector<T> load_array(const std::byte* p, uint64_t count) {
  std::vector<T> values(count);
  if (count > 0) std::memcpy(values.data(), p, count * sizeof(T));
  return values;
}

// Widens one stored token to int64. Float tokens must hold an integer that int64 can take.
template <class T>
int64_t widen(T value, const std::string& prefix, int64_t sequence, int64_t position) {
  if constexpr (std::is_floating_point_v<T>) {
    MOE_CHECK(std::isfinite(value) && std::trunc(value) == value &&
                  std::fabs(static_cast<double>(value)) < 9.2e18,
              prefix, ".bin: token ", position, " of sequence ", sequence, " is ", value,
              ", not an integer token id");
  }
  return static_cast<int64_t>(value);
}

template <class T>
void widen_all(const std::byte* src, int64_t length, int64_t* out, const std::string& prefix,
               int64_t sequence, int64_t offset) {
  for (int64_t i = 0; i < length; ++i)
    out[i] =
        widen(load<T>(src + i * static_cast<int64_t>(sizeof(T))), prefix, sequence, offset + i);
}

}  // namespace

IndexedDataset::IndexedDataset(std::string path_prefix) : path_prefix_(std::move(path_prefix)) {
  const std::string idx_path = index_file_path(path_prefix_);
  const std::string bin_path = data_file_path(path_prefix_);
  {
    const MappedFile idx(idx_path, "indexed dataset index");
    const std::byte* p = idx.data();
    const uint64_t size = idx.size();
    if (size >= kIndexMagic.size()) {
      MOE_CHECK(std::memcmp(p, kIndexMagic.data(), kIndexMagic.size()) == 0, idx_path,
                ": not a Megatron indexed dataset index (the file does not start with "
                "MMIDIDX\\0\\0)");
    }
    MOE_CHECK(size >= static_cast<uint64_t>(kIndexHeaderBytes), idx_path, ": truncated: ", size,
              " bytes, shorter than the ", kIndexHeaderBytes, "-byte header");
    const uint64_t version = load<uint64_t>(p + 9);
    MOE_CHECK(version == kIndexVersion, idx_path, ": index version ", version, ", only version ",
              kIndexVersion, " exists");
    const int code = static_cast<int>(load<uint8_t>(p + 17));
    const std::optional<IndexedDType> dtype = indexed_dtype_from_code(code);
    MOE_CHECK(dtype.has_value(), idx_path, ": unknown dtype code ", code,
              " (known: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, "
              "8 uint16)");
    dtype_ = *dtype;
    const uint64_t sequences = load<uint64_t>(p + 18);
    const uint64_t entries = load<uint64_t>(p + 26);

    // 34 + 12 S + 8 D without overflow: each count is first bounded by the file size.
    const uint64_t body = size - kIndexHeaderBytes;
    MOE_CHECK(sequences <= body / 12 && entries <= body / 8, idx_path, ": the header counts ",
              sequences, " sequences and ", entries, " document entries, more than its ", size,
              " bytes can hold (truncated or corrupt)");
    const uint64_t expected = kIndexHeaderBytes + 12 * sequences + 8 * entries;
    MOE_CHECK(!(sequences > 0 && size == expected + sequences), idx_path,
              ": holds a mode per sequence (a multimodal dataset); reading multimodal "
              "datasets is not supported");
    MOE_CHECK(size == expected, idx_path, ": is ", size, " bytes but its header (", sequences,
              " sequences, ", entries, " document entries) needs ", expected,
              " (truncated or corrupt)");
    MOE_CHECK(entries >= 1, idx_path,
              ": document count 0; the document indices start with 0, so at least 1 entry");

    const std::byte* arrays = p + kIndexHeaderBytes;
    lengths_ = load_array<int32_t>(arrays, sequences);
    pointers_ = load_array<int64_t>(arrays + 4 * sequences, sequences);
    document_indices_ = load_array<int64_t>(arrays + 12 * sequences, entries);
  }

  MappedFile bin(bin_path, "indexed dataset data");
  const int64_t bin_bytes = static_cast<int64_t>(bin.size());
  const int64_t item = indexed_dtype_size(dtype_);
  const int64_t count = num_sequences();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t length = lengths_[i];
    const int64_t pointer = pointers_[i];
    MOE_CHECK(length >= 0, index_file_path(path_prefix_), ": sequence ", i, " has negative length ",
              length);
    MOE_CHECK(pointer >= 0, index_file_path(path_prefix_), ": sequence ", i,
              " has negative pointer ", pointer);
    MOE_CHECK(i == 0 || pointer >= pointers_[i - 1], index_file_path(path_prefix_),
              ": sequence pointers must be non-decreasing; sequence ", i, " starts at byte ",
              pointer, ", before sequence ", i - 1, " at byte ", pointers_[i - 1]);
    // length <= 2^31 and item <= 8, so length * item cannot overflow.
    MOE_CHECK(pointer <= bin_bytes && length * item <= bin_bytes - pointer, bin_path,
              ": too short (", bin_bytes, " bytes) for sequence ", i, " of ", length, " ",
              indexed_dtype_name(dtype_), " tokens at byte ", pointer,
              " (truncated, or not the .bin of this .idx)");
    num_tokens_ += length;
  }
  const std::vector<int64_t>& docs = document_indices_;
  MOE_CHECK(docs.front() == 0, index_file_path(path_prefix_),
            ": the document indices must start at 0, not ", docs.front());
  for (size_t d = 1; d < docs.size(); ++d) {
    MOE_CHECK(docs[d] >= docs[d - 1], index_file_path(path_prefix_),
              ": document indices must be non-decreasing; entry ", d, " is ", docs[d], " after ",
              docs[d - 1]);
  }
  MOE_CHECK(docs.back() == count, index_file_path(path_prefix_), ": the last document index is ",
            docs.back(), " but there are ", count, " sequences");
  std::tie(data_, data_bytes_) = bin.release();
}

IndexedDataset::~IndexedDataset() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), data_bytes_);
}

void IndexedDataset::check_sequence(int64_t sequence) const {
  MOE_CHECK(sequence >= 0 && sequence < num_sequences(), path_prefix_, ": sequence ", sequence,
            " out of range (", num_sequences(), " sequences)");
}

std::span<const std::byte> IndexedDataset::sequence_bytes(int64_t sequence) const {
  check_sequence(sequence);
  const size_t bytes = static_cast<size_t>(lengths_[sequence] * indexed_dtype_size(dtype_));
  if (bytes == 0) return {};
  return {data_ + pointers_[sequence], bytes};
}

void IndexedDataset::read(int64_t sequence, int64_t offset, int64_t length, int64_t* out) const {
  check_sequence(sequence);
  const int64_t size = lengths_[sequence];
  MOE_CHECK(offset >= 0 && length >= 0 && offset <= size && length <= size - offset, path_prefix_,
            ": tokens [", offset, ", ", offset + length, ") out of range for ", "sequence ",
            sequence, " of ", size, " tokens");
  if (length == 0) return;
  const std::byte* src = data_ + pointers_[sequence] + offset * indexed_dtype_size(dtype_);
  visit_indexed_dtype(
      dtype_, [&]<class T>() { widen_all<T>(src, length, out, path_prefix_, sequence, offset); });
}

std::vector<int64_t> IndexedDataset::sequence(int64_t sequence) const {
  check_sequence(sequence);
  std::vector<int64_t> tokens(static_cast<size_t>(lengths_[sequence]));
  read(sequence, 0, lengths_[sequence], tokens.data());
  return tokens;
}

}  // namespace moe::data
