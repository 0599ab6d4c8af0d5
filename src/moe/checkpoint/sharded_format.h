// The JSON records of sharded checkpoints (sharded_checkpoint.h), shared by the shard writer,
// write_index and the reader: one tensor's description, its parsing with errors that name the
// file, tensor and field, and the coverage check (boxes tile the view exactly once).
//
// A tensor record, in shard_<r>.json and index.json alike (under "tensors": {name: record}):
//   {"dtype": "BF16", "global_shape": [..], "view_shape": [..],
//    "boxes": [{"offset": [..], "shape": [..], "file": "shard_0_of_4.safetensors",
//               "key": "<name>#0", "crc32c": 1234567}, ...]}
// dtype is the safetensors name; offset / shape are in view coordinates; crc32c (a number) is
// the CRC-32C of the box's bytes in the file (row-major in its shape, little-endian).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/checkpoint/box_copy.h"
#include "moe/core/tensor.h"

namespace moe::checkpoint::sharded {

inline constexpr const char* kFormat = "moecore-sharded-checkpoint";
inline constexpr const char* kShardFormat = "moecore-sharded-checkpoint-shard";

struct BoxRecord {
  Box box;
  std::string file;  // safetensors file name inside the folder
  std::string key;   // tensor key inside that file
  uint32_t crc32c = 0;
  std::string source;  // where the record came from (shard json), for messages; not saved
};

struct TensorRecord {
  DType dtype = DType::f32;
  Shape global_shape;
  Shape view_shape;
  std::vector<BoxRecord> boxes;
};

nlohmann::ordered_json to_json(const TensorRecord& t);

// `j` parsed and checked (dtype known, shapes non-negative, view of the global numel with a
// common refinement, every box of the view's rank, inside it and not empty); errors say
// "<path>: tensor '<name>': <field> ...". Each box's source is `path`.
TensorRecord parse_tensor(const nlohmann::json& j, const std::string& name,
                          const std::string& path);

// The checked value of an integer field of an object (errors name path and field).
int64_t int_field(const nlohmann::json& j, const char* field, const std::string& path);
std::string string_field(const nlohmann::json& j, const char* field, const std::string& path);

// Errors unless t's boxes tile its view exactly once: two boxes sharing an element (named with
// their sources: a replicated tensor written by two ranks) or an element of no box (the first
// one, row-major, with its view coordinates). `where` names the index being checked.
void check_tiling(const TensorRecord& t, const std::string& name, const std::string& where);

}  // namespace moe::checkpoint::sharded
