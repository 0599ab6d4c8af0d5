// Hugging Face safetensors: reading (memory-mapped, validated), writing (atomic, byte-identical
// to the Python library for the same tensors), and sharded checkpoints with an index JSON.
//
// The format (https://github.com/huggingface/safetensors):
//   [8 bytes: N, little-endian u64] [N bytes: JSON header, UTF-8] [data buffer]
//   header = {"__metadata__": {str: str} (optional),
//             "<name>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]},
//             ...}
// Offsets are relative to the start of the data buffer; tensor data is little-endian, C order.
// The tensors must cover the data buffer exactly: sorted by offset, each begins where the
// previous one ended, the last ends at the end of the file, and end - begin equals
// numel * element size. Writers pad the header with spaces so that N is a multiple of 8.
//
// Reading validates every one of those rules and reports a violation as a moe::Error naming
// the file and the problem. Tensors of a dtype that moe::Tensor cannot hold (I8, U16, F8_E8M0,
// F4, ...) still list and still give a byte view; loading them as a Tensor is an error. BOOL
// loads as u8 (the same bytes: 0 or 1).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::io {

// ---- element types of the format ---------------------------------------------------------
// Declared in the order of the Rust library's `Dtype` enum (safetensors/src/tensor.rs), which
// the writer sorts by: that order is what makes our files byte-identical to Python's.
enum class SafetensorsDType : unsigned char {
  BOOL,
  F4,
  F6_E2M3,
  F6_E3M2,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  F8_E4M3FNUZ,
  F8_E5M2FNUZ,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  C64,
  F64,
  I64,
  U64
};

const char* safetensors_dtype_name(SafetensorsDType dtype);  // "BF16"
size_t safetensors_dtype_bits(SafetensorsDType dtype);       // 16 (F4: 4, F6_*: 6)
// The dtype named `name` ("F32"), or nullopt for a name the format does not define.
std::optional<SafetensorsDType> parse_safetensors_dtype(const std::string& name);
// The moe dtype a tensor loads as (BOOL -> u8), or nullopt if moe has none.
std::optional<DType> to_moe_dtype(SafetensorsDType dtype);
SafetensorsDType to_safetensors_dtype(DType dtype);  // f32 -> F32, fp8_e4m3 -> F8_E4M3, ...

// ---- one tensor's entry in a header ------------------------------------------------------
struct SafetensorsTensorInfo {
  std::string name;
  SafetensorsDType file_dtype = SafetensorsDType::F32;
  std::optional<DType> dtype;  // to_moe_dtype(file_dtype)
  Shape shape;
  uint64_t begin = 0;  // [begin, end): bytes of the data buffer
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

using SafetensorsMetadata = std::map<std::string, std::string>;

class MappedFile;  // a read-only mmap of a whole file (safetensors.cpp)

// A zero-copy view of one tensor's bytes inside a mapped file. It holds the mapping: the
// bytes stay valid after the SafetensorsFile that gave the view is gone.
class SafetensorsView {
 public:
  const SafetensorsTensorInfo& info() const { return info_; }
  std::span<const std::byte> bytes() const { return bytes_; }
  // The bytes as elements of T; checks that T is the tensor's dtype and that the bytes are
  // aligned for T (files written by a conforming writer always are).
  template <class T>
  std::span<const T> as() const;

 private:
  friend class SafetensorsFile;
  void check_as(DType requested, size_t alignment) const;
  SafetensorsTensorInfo info_;
  std::span<const std::byte> bytes_;
  std::shared_ptr<const MappedFile> mapping_;
};

// ---- one file ----------------------------------------------------------------------------
// Opening maps the file and validates the whole header; a SafetensorsFile is a cheap handle
// (copies share the mapping).
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const;
  // Tensor names, sorted (as Python's safe_open(...).keys()).
  const std::vector<std::string>& names() const;
  bool contains(const std::string& name) const;
  const SafetensorsTensorInfo& info(const std::string& name) const;  // throws if absent
  const SafetensorsMetadata& metadata() const;  // "__metadata__"; empty if absent
  uint64_t header_size() const;                 // N
  uint64_t file_size() const;

  // A copy of the tensor on `device`, cast to `dtype` if given (round to nearest even).
  // CUDA targets receive the file's bytes and cast on the GPU.
  Tensor load(const std::string& name, Device device = Device::cpu(),
              std::optional<DType> dtype = std::nullopt) const;
  SafetensorsView view(const std::string& name) const;

 private:
  SafetensorsFile() = default;  // only open() makes one
  struct State;
  std::shared_ptr<const State> state_;
};

// ---- a checkpoint: one file or Hugging Face shards with an index -------------------------
// open(path) accepts
//   - a .safetensors file;
//   - an index JSON ({"metadata": {...}, "weight_map": {tensor name: shard file name}}), whose
//     shards are looked up in the index's folder;
//   - a folder holding model.safetensors.index.json, else model.safetensors, else exactly one
//     *.safetensors.index.json or exactly one *.safetensors file.
// Every shard is opened (mapped and validated) up front. A missing shard, or a name mapped to a
// shard that lacks it, is an error naming the index, the shard and the tensor. Tensors that a
// shard holds but the weight_map does not list are not part of the collection.
class SafetensorsCollection {
 public:
  static SafetensorsCollection open(const std::string& path);

  const std::vector<std::string>& names() const;  // sorted
  bool contains(const std::string& name) const;
  const SafetensorsTensorInfo& info(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  Tensor load(const std::string& name, Device device = Device::cpu(),
              std::optional<DType> dtype = std::nullopt) const;
  SafetensorsView view(const std::string& name) const;

  // The index's "metadata" (values that are not strings are given as their JSON text, e.g.
  // total_size "1234"), or the single file's "__metadata__".
  const SafetensorsMetadata& metadata() const;
  const std::vector<SafetensorsFile>& files() const;  // sorted by shard file name
  const std::string& index_path() const;              // empty for a single file

 private:
  SafetensorsCollection() = default;  // only open() makes one
  struct State;
  std::shared_ptr<const State> state_;
};

// ---- writing -----------------------------------------------------------------------------
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// The file for `tensors` (any device; one tensor at a time is copied to the host) and
// `metadata` (written as "__metadata__" unless empty), written atomically (AtomicFile).
// Layout as the Rust writer's `prepare`: tensors sorted by dtype (descending in the order of
// SafetensorsDType: U64, I64, F64, F32, I32, BF16, F16, F8_E4M3, F8_E5M2, U8, ...) then by
// name (bytewise), packed without gaps; compact JSON with "__metadata__" first and each entry
// as {"dtype", "shape", "data_offsets"}; spaces to a multiple of 8. The result is
// byte-identical to safetensors.torch.save_file for the same tensors when metadata has at most
// one key (Python passes metadata through a Rust HashMap, whose order is random).
// Throws on duplicate or reserved ("__metadata__") names and undefined tensors, before writing.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const SafetensorsMetadata& metadata = {});
// The header (N and the padded JSON, without the data) that write_safetensors would write.
std::string safetensors_header(const NamedTensors& tensors, const SafetensorsMetadata& metadata);

struct ShardedWriteResult {
  std::vector<std::string> files;  // shard file names, in order (no folder)
  std::string index_file;          // "model.safetensors.index.json", or empty if one file
  uint64_t total_size = 0;         // sum of tensor bytes
};

// Writes `tensors` into `folder` as Hugging Face does (huggingface_hub
// split_state_dict_into_shards_factory): walk the tensors in the given order; a tensor larger
// than max_shard_bytes gets a shard of its own; otherwise start a new shard when adding it
// would exceed max_shard_bytes. Shards are named <prefix>-00001-of-0000K.safetensors, and the
// index <prefix>.safetensors.index.json = {"metadata": {"total_size": N}, "weight_map": {...}}
// (2-space indent, sorted keys, as transformers writes it). With one shard the file is
// <prefix>.safetensors and there is no index. Each file is written atomically, the index last;
// then files of an earlier save with this prefix that the new one does not use (other shard
// counts, the index or the single file) are removed, so that open(folder) finds this save.
// `metadata` goes into every shard's "__metadata__".
ShardedWriteResult write_safetensors_sharded(const std::string& folder, const NamedTensors& tensors,
                                             uint64_t max_shard_bytes,
                                             const SafetensorsMetadata& metadata = {},
                                             const std::string& prefix = "model");

// ---- template definitions ----------------------------------------------------------------
template <class T>
std::span<const T> SafetensorsView::as() const {
  check_as(dtype_of<T>, alignof(T));
  return {reinterpret_cast<const T*>(bytes_.data()), bytes_.size() / sizeof(T)};
}

}  // namespace moe::io
