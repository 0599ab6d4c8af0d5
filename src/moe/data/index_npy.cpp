// Integer .npy files for the dataset index cache (index_npy.h).
#include "moe/data/index_npy.h"

#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>

#include "moe/core/crc32c.h"
#include "moe/core/error.h"
#include "moe/io/atomic_file.h"
#include "moe/io/npy.h"

namespace moe::data {

namespace {

size_t itemsize(IndexDType dtype) {
  switch (dtype) {
    case IndexDType::i16:
      return 2;
    case IndexDType::i32:
      return 4;
    case IndexDType::u32:
      return 4;
    case IndexDType::i64:
      return 8;
  }
  return 8;
}

bool fits(IndexDType dtype, int64_t v) {
  switch (dtype) {
    case IndexDType::i16:
      return v >= INT16_MIN && v <= INT16_MAX;
    case IndexDType::i32:
      return v >= INT32_MIN && v <= INT32_MAX;
    case IndexDType::u32:
      return v >= 0 && v <= int64_t{UINT32_MAX};
    case IndexDType::i64:
      return true;
  }
  return false;
}

}  // namespace

const char* index_dtype_descr(IndexDType dtype) {
  switch (dtype) {
    case IndexDType::i16:
      return "<i2";
    case IndexDType::i32:
      return "<i4";
    case IndexDType::u32:
      return "<u4";
    case IndexDType::i64:
      return "<i8";
  }
  return "?";
}

uint32_t write_index_npy(const std::string& path, IndexDType dtype,
                         const std::vector<int64_t>& shape, std::span<const int64_t> values) {
  MOE_CHECK(shape.size() == 1 || shape.size() == 2, path, ": index arrays are 1-D or 2-D");
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  MOE_CHECK(numel == static_cast<int64_t>(values.size()), path, ": shape ", shape_str(shape),
            " does not hold ", values.size(), " values");
  const size_t size = itemsize(dtype);
  std::vector<unsigned char> bytes(values.size() * size);
  for (size_t i = 0; i < values.size(); ++i) {
    MOE_CHECK(fits(dtype, values[i]), path, ": value ", values[i], " does not fit ",
              index_dtype_descr(dtype));
    const auto v = static_cast<uint64_t>(values[i]);
    for (size_t b = 0; b < size; ++b)
      bytes[i * size + b] = static_cast<unsigned char>(v >> (8 * b));
  }
  const std::string head = io::npy_header(index_dtype_descr(dtype), shape);
  uint32_t crc = crc32c(head.data(), head.size());
  crc = crc32c(bytes.data(), bytes.size(), crc);
  io::AtomicFile file(path);
  file.write(head);
  file.write(bytes.data(), bytes.size());
  file.commit();
  return crc;
}

IndexArray read_index_npy(const std::string& path, uint32_t* crc) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "cannot open index file ", path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (crc) *crc = crc32c(bytes.data(), bytes.size());
  const io::NpyLayout layout = io::parse_npy_layout(bytes, path);
  IndexArray out;
  bool known = false;
  for (IndexDType d : {IndexDType::i16, IndexDType::i32, IndexDType::i64, IndexDType::u32})
    if (layout.descr == index_dtype_descr(d)) {
      out.dtype = d;
      known = true;
    }
  MOE_CHECK(known, path, ": .npy dtype ", layout.descr, " is not <i2, <i4, <i8 or <u4");
  out.shape = layout.shape;
  MOE_CHECK(out.shape.size() == 1 || out.shape.size() == 2, path,
            ": index arrays are 1-D or 2-D, shape ", shape_str(out.shape));
  // parse_npy_layout checked that the product fits int64; the size check comes before the
  // allocation, since the shape is only the file's claim.
  const auto numel = static_cast<size_t>(layout.numel);
  const size_t size = itemsize(out.dtype);
  const size_t have = bytes.size() - layout.data_offset;
  MOE_CHECK(numel <= have / size && have == numel * size, path, ": .npy data holds ", have,
            " bytes, shape ", shape_str(out.shape), " of ", layout.descr, " needs ", numel, " x ",
            size, numel <= (size_t{1} << 56) ? " = " + std::to_string(numel * size) : "",
            " (truncated file?)");
  out.values.resize(numel);
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data() + layout.data_offset);
  for (size_t i = 0; i < numel; ++i) {
    uint64_t v = 0;
    for (size_t b = 0; b < size; ++b) v |= static_cast<uint64_t>(data[i * size + b]) << (8 * b);
    switch (out.dtype) {
      case IndexDType::i16:
        out.values[i] = static_cast<int16_t>(v);
        break;
      case IndexDType::i32:
        out.values[i] = static_cast<int32_t>(v);
        break;
      case IndexDType::u32:
        out.values[i] = static_cast<int64_t>(v);
        break;
      case IndexDType::i64:
        out.values[i] = static_cast<int64_t>(v);
        break;
    }
  }
  return out;
}

void write_index_cache_manifest(const CachePath& cache_path,
                                const nlohmann::ordered_json& checksums,
                                const std::string& description) {
  io::write_file_atomically(cache_path("checksums.json"), checksums.dump(4) + "\n");
  io::write_file_atomically(cache_path("description.txt"), description);  // last: complete
}

std::vector<IndexArray> read_checked_index_files(const std::string& who,
                                                 std::span<const char* const> names,
                                                 const nlohmann::json& checksums,
                                                 const CachePath& cache_path,
                                                 const std::string& refuse) {
  std::vector<IndexArray> arrays(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    uint32_t crc = 0;
    try {
      arrays[i] = read_index_npy(cache_path(names[i]), &crc);
    } catch (const Error& e) {
      MOE_FAIL(who, ": the index cache file is damaged: ", e.what(), refuse);
    }
    MOE_CHECK(checksums.contains(names[i]) && checksums[names[i]] == crc, who,
              ": the index cache file ", cache_path(names[i]),
              " is corrupted (its CRC-32C differs from the one recorded at build).", refuse);
  }
  return arrays;
}

}  // namespace moe::data
