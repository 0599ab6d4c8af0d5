// The integer .npy files of the dataset index cache: what Megatron's GPTDataset and
// BlendedDataset save with numpy.save (document_index int32, sample_index int32 or int64 [n, 2],
// shuffle_index uint32 or int64, dataset_index int16, dataset_sample_index int64), so numpy
// reads ours and the dtypes are Megatron's. Format: numpy.lib.format version 1.0 (see
// moe/io/npy.h), C order, little-endian.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <vector>

namespace moe::data {

enum class IndexDType { i16, i32, i64, u32 };

struct IndexArray {
  IndexDType dtype = IndexDType::i64;
  std::vector<int64_t> shape;   // 1-D or 2-D
  std::vector<int64_t> values;  // widened to int64, C order
};

// Writes `values` as a .npy of `dtype` and `shape` atomically (temporary + rename); every value
// must fit the dtype. Returns the CRC-32C of the whole file, which the cache records.
uint32_t write_index_npy(const std::string& path, IndexDType dtype,
                         const std::vector<int64_t>& shape, std::span<const int64_t> values);

// Reads a file written by write_index_npy (or numpy.save of such an array). A wrong magic,
// header, dtype or length is an error naming the path. `crc32c` receives the file's CRC-32C.
IndexArray read_index_npy(const std::string& path, uint32_t* crc32c = nullptr);

const char* index_dtype_descr(IndexDType dtype);  // "<i2", "<i4", "<i8", "<u4"

// The index cache of GPTDataset and BlendedDataset: a folder of .npy files, checksums.json
// (each .npy file's CRC-32C, by file name) and description.txt. `cache_path(name)` is the path of
// the cache's file `name`.
using CachePath = std::function<std::string(const std::string& name)>;

// Finishes writing a cache whose .npy files are written: checksums.json (`checksums`, indented
// by 4) and then description.txt, last, so a cache that has its description is complete.
void write_index_cache_manifest(const CachePath& cache_path,
                                const nlohmann::ordered_json& checksums,
                                const std::string& description);

// Reads the cache's .npy files `names` in order, each checked against the CRC-32C that
// `checksums` (the parsed checksums.json) records for it. A file read_index_npy refuses, or one
// whose checksum is missing or differs, is an error "<who>: the index cache file ..." that ends
// with `refuse` (how to rebuild the cache).
std::vector<IndexArray> read_checked_index_files(const std::string& who,
                                                 std::span<const char* const> names,
                                                 const nlohmann::json& checksums,
                                                 const CachePath& cache_path,
                                                 const std::string& refuse);

}  // namespace moe::data
