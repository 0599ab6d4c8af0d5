// Sharded checkpoints: global tensors stored as slices. Every rank writes the slices it owns,
// all ranks in parallel; a later run under another parallel mapping (world size, expert
// parallel split, distributed optimizer on or off) reads only the slices it needs. The format
// is in docs/checkpoints.md ("Sharded checkpoints").
//
// A slice of a tensor (TensorSlice): the tensor has a global shape (what the checkpoint
// holds) and a view shape, the same elements re-read with a finer row-major shape, in which a
// rank's piece is one box (offset, shape); of that box a distributed optimizer keeps only the
// flat range [begin, end) (row-major in the box). The data of a slice is its end - begin
// elements. Each slice is stored as the boxes of flat_range_boxes(box shape, begin, end)
// (box_copy.h), one safetensors tensor each.
//
// Files in the checkpoint folder:
//   shard_<r>_of_<w>.safetensors   rank r's boxes, under the keys "<tensor name>#<i>"
//   shard_<r>.json                 their description: tensor, dtype, shapes, box, key, CRC-32C
//   index.json                     all shards' descriptions merged and checked by write_index
//
// Saving (the caller's protocol; the folder is an AtomicFolder's temporary folder, so that the
// checkpoint appears complete or not at all):
//   every rank:  write_shards(tmp.path(), rank, world, my_slices);
//   barrier;
//   rank 0:      write_index(tmp.path(), world); tmp.commit();
//   barrier (if the others go on to read it).
// A tensor replicated over ranks (data parallel) must be written by one replica only: two ranks
// writing the same elements is an error of write_index, as is an element nobody wrote.
//
// Loading: ShardedCheckpointReader(folder).read(name, slice of this run, out) on every rank,
// any mapping. Only the stored boxes that intersect the slice are touched, through the
// memory-mapped files; each box's CRC-32C is checked the first time it is read (or all at once
// with verify_all()).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "moe/checkpoint/box_copy.h"
#include "moe/core/tensor.h"
#include "moe/io/safetensors.h"

namespace moe::checkpoint {

inline constexpr int kShardedCheckpointVersion = 1;
inline constexpr const char* kShardedIndexFile = "index.json";

// Where one rank's piece of a tensor sits in it. Empty fields take their defaults, so a whole
// unsharded tensor is just {global_shape}. For a parameter of nn/ (ParamLayout) it is
// {global_shape_of(p), view_shape_of(p), box_offset_of(p), box_shape_of(p)}, plus the flat range
// of the box that a distributed optimizer keeps for its states.
struct TensorSlice {
  // (Default member initializers: a partial aggregate initialization, TensorSlice{global},
  // draws no -Wmissing-field-initializers.)
  Shape global_shape{};
  Shape view_shape{};                 // empty: global_shape (same numel, refines it)
  std::vector<int64_t> box_offset{};  // in view coordinates; empty: all zeros
  Shape box_shape{};                  // empty: view_shape
  int64_t begin = 0;                  // flat range [begin, end) of the box, row-major
  int64_t end = -1;                   // -1: the box's numel

  // The same slice with every default filled in (view, offset, box, end).
  TensorSlice resolved() const;
};

// A slice and its data: end - begin elements (any shape of that numel), any dtype and device.
struct ShardPiece {
  std::string name;
  TensorSlice slice;
  Tensor data;
};

// "shard_3_of_8.safetensors", "shard_3.json".
std::string shard_tensor_file(int rank, int world);
std::string shard_json_file(int rank);

struct ShardWriteResult {
  std::string tensor_file;  // names inside the folder
  std::string json_file;
  int64_t boxes = 0;
  uint64_t bytes = 0;  // tensor bytes written
};

// Rank `rank` of `world` writes its pieces into `folder` (which must exist): the safetensors
// file and then its json, each atomically. A piece with begin == end stores no box but still
// declares its tensor. Errors (naming the rank, tensor and field) for a slice that does not fit
// its shapes, data of the wrong numel, or one tensor given twice with different dtype/shapes.
ShardWriteResult write_shards(const std::string& folder, int rank, int world,
                              const std::vector<ShardPiece>& pieces);

// Run by one rank after every rank's write_shards has returned: reads shard_<r>.json for
// r < world, checks that they agree (world size, each tensor's dtype and shapes) and that each
// tensor's boxes tile its view exactly once (an overlap names both shards, a gap the first
// missing element), then writes index.json atomically. A shard json of a rank >= world in the
// folder (another world's save) is an error.
void write_index(const std::string& folder, int world);

struct ReaderOptions {
  // Check each stored box's CRC-32C the first time a read touches it. This reads the whole box
  // once (more than a slice may need when the stored boxes are larger than the slices read);
  // false skips it (then verify_all() is the way to check).
  bool verify_on_read = true;
};

class ShardedCheckpointReader {
 public:
  // Parses folder/index.json and checks that its files exist; errors name the file and field.
  explicit ShardedCheckpointReader(std::string folder, ReaderOptions options = {});
  ~ShardedCheckpointReader();
  ShardedCheckpointReader(const ShardedCheckpointReader&) = delete;
  ShardedCheckpointReader& operator=(const ShardedCheckpointReader&) = delete;

  const std::string& folder() const { return folder_; }
  int world_size() const { return world_; }       // of the run that wrote it
  std::vector<std::string> tensor_names() const;  // sorted
  bool has(const std::string& name) const;
  const Shape& global_shape(const std::string& name) const;
  const Shape& view_shape(const std::string& name) const;  // the stored view
  DType dtype(const std::string& name) const;              // the stored dtype

  // Fills `out` (defined, end - begin elements, any dtype: converted from the stored one with
  // Tensor::to's rounding; CPU, or CUDA through a host copy) with the flat range [begin, end)
  // of the box (box_offset, box_shape) of `view_shape`. The view may differ from the stored
  // one when the two have a common refinement (view_refine.h), e.g. stored [E, 2F, H] and
  // requested [E, 2, F, H]; otherwise it is an error naming both.
  void read(const std::string& name, const Shape& view_shape,
            const std::vector<int64_t>& box_offset, const Shape& box_shape, int64_t begin,
            int64_t end, Tensor& out) const;
  // The same for a TensorSlice (its global shape, if given, must be the stored one).
  void read(const std::string& name, const TensorSlice& slice, Tensor& out) const;
  // The whole tensor in its global shape, in `dtype` (default: the stored one), on the host.
  Tensor read_full(const std::string& name, std::optional<DType> dtype = std::nullopt) const;

  // Checks every box's CRC-32C (reads the whole checkpoint); the first mismatch is an error.
  void verify_all() const;

  struct StoredTensor;  // sharded_checkpoint_reader.cpp

 private:
  const StoredTensor& tensor(const std::string& name) const;
  // The bytes of box `i` of `t` (its file opened on first use), its CRC checked if `verify`
  // and not checked before.
  io::SafetensorsView box_bytes(const StoredTensor& t, size_t i, bool verify) const;

  std::string folder_;
  ReaderOptions options_;
  int world_ = 0;
  std::map<std::string, std::unique_ptr<StoredTensor>> tensors_;
  // Opened lazily (mapping and header validation on first use), guarded by mutex_.
  mutable std::mutex mutex_;
  mutable std::map<std::string, io::SafetensorsFile> files_;
};

}  // namespace moe::checkpoint
