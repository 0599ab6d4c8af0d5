// Writing sharded checkpoints: each rank's boxes (write_shards) and the merged, checked index
// (write_index). Format and protocol: sharded_checkpoint.h, docs/checkpoints.md.
#include "moe/checkpoint/sharded_checkpoint.h"

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "moe/checkpoint/sharded_format.h"
#include "moe/checkpoint/view_refine.h"
#include "moe/core/crc32c.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/io/atomic_file.h"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;
using sharded::BoxRecord;
using sharded::TensorRecord;

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

// Errors (prefixed by `where`) unless the resolved slice fits its shapes.
void check_slice(const TensorSlice& s, const std::string& where) {
  MOE_CHECK(common_refinement(s.global_shape, s.view_shape).has_value(), where, ": view_shape ",
            shape_str(s.view_shape), " is not a row-major reshape of global_shape ",
            shape_str(s.global_shape));
  const Box box{s.box_offset, s.box_shape};
  MOE_CHECK(box_inside(box, s.view_shape), where, ": box ", box_str(box),
            " (box_offset and box_shape) is not inside view_shape ", shape_str(s.view_shape));
  MOE_CHECK(0 <= s.begin && s.begin <= s.end && s.end <= box.numel(), where, ": flat range [",
            s.begin, ", ", s.end, ") is not inside the box of ", box.numel(), " elements");
}

std::string rank_str(int rank, int world) {
  return "rank " + std::to_string(rank) + " of " + std::to_string(world);
}

}  // namespace

TensorSlice TensorSlice::resolved() const {
  TensorSlice s = *this;
  if (s.view_shape.empty()) s.view_shape = s.global_shape;
  if (s.box_offset.empty()) s.box_offset.assign(s.view_shape.size(), 0);
  if (s.box_shape.empty()) s.box_shape = s.view_shape;
  if (s.end == -1) s.end = numel_of(s.box_shape);
  return s;
}

std::string shard_tensor_file(int rank, int world) {
  return "shard_" + std::to_string(rank) + "_of_" + std::to_string(world) + ".safetensors";
}

std::string shard_json_file(int rank) {
  return "shard_" + std::to_string(rank) + ".json";
}

ShardWriteResult write_shards(const std::string& folder, int rank, int world,
                              const std::vector<ShardPiece>& pieces) {
  MOE_CHECK(world >= 1 && rank >= 0 && rank < world, "write_shards: rank ", rank,
            " is not a rank of a world of ", world);
  const std::string where = "write_shards (" + rank_str(rank, world) + ", " + folder + ")";
  MOE_CHECK(fs::is_directory(folder), where, ": the folder does not exist");
  ShardWriteResult result;
  result.tensor_file = shard_tensor_file(rank, world);
  result.json_file = shard_json_file(rank);

  std::map<std::string, TensorRecord> records;  // sorted by name
  std::map<std::string, int> boxes_of;          // per tensor: keys "<name>#<i>" given so far
  io::NamedTensors named;
  for (const ShardPiece& p : pieces) {
    const std::string at = where + ": tensor '" + p.name + "'";
    const TensorSlice s = p.slice.resolved();
    check_slice(s, at);
    MOE_CHECK(p.data.defined(), at, ": the data is undefined");
    MOE_CHECK(p.data.numel() == s.end - s.begin, at, ": the data has ", p.data.numel(),
              " elements for the flat range [", s.begin, ", ", s.end, ")");
    auto [it, fresh] = records.try_emplace(p.name);
    TensorRecord& rec = it->second;
    if (fresh) {
      rec.dtype = p.data.dtype();
      rec.global_shape = s.global_shape;
      rec.view_shape = s.view_shape;
    }
    MOE_CHECK(rec.dtype == p.data.dtype() && rec.global_shape == s.global_shape &&
                  rec.view_shape == s.view_shape,
              at, ": given twice, as ", rec.dtype, " ", shape_str(rec.global_shape), " view ",
              shape_str(rec.view_shape), " and as ", p.data.dtype(), " ", shape_str(s.global_shape),
              " view ", shape_str(s.view_shape));
    // The checksums are of host bytes; a CUDA piece is copied once for them (and once more,
    // one box at a time, by the file writer).
    const Tensor flat = p.data.reshape({p.data.numel()});
    const Tensor host = p.data.is_cuda() ? flat.to(Device::cpu()) : flat;
    int64_t pos = 0;
    for (const Box& sub : flat_range_boxes(s.box_shape, s.begin, s.end)) {
      const int64_t count = sub.numel();
      BoxRecord b;
      b.box = sub;
      for (size_t d = 0; d < sub.offset.size(); ++d) b.box.offset[d] += s.box_offset[d];
      b.file = result.tensor_file;
      b.key = p.name + "#" + std::to_string(boxes_of[p.name]++);
      const Tensor bytes = host.rows(pos, count);
      b.crc32c = crc32c(bytes.raw(), bytes.nbytes());
      named.emplace_back(b.key, flat.rows(pos, count).reshape(sub.shape));
      rec.boxes.push_back(std::move(b));
      pos += count;
      result.bytes += bytes.nbytes();
      ++result.boxes;
    }
  }

  io::write_safetensors((fs::path(folder) / result.tensor_file).string(), named,
                        {{"format", sharded::kShardFormat},
                         {"rank", std::to_string(rank)},
                         {"world_size", std::to_string(world)}});
  nlohmann::ordered_json j;
  j["format"] = sharded::kShardFormat;
  j["version"] = kShardedCheckpointVersion;
  j["rank"] = rank;
  j["world_size"] = world;
  j["file"] = result.tensor_file;
  j["tensors"] = nlohmann::ordered_json::object();
  for (const auto& [name, rec] : records) j["tensors"][name] = sharded::to_json(rec);
  io::write_file_atomically((fs::path(folder) / result.json_file).string(), j.dump(1) + "\n");
  return result;
}

void write_index(const std::string& folder, int world) {
  const std::string where = "write_index(" + folder + ", world " + std::to_string(world) + ")";
  MOE_CHECK(world >= 1, where, ": the world size must be at least 1");
  MOE_CHECK(fs::is_directory(folder), where, ": the folder does not exist");
  // A shard description of a rank outside this world: another save in the same folder.
  const std::regex shard_json("shard_([0-9]+)\\.json");
  std::set<std::pair<int64_t, std::string>> outside;  // by rank
  for (const auto& entry : fs::directory_iterator(folder)) {
    std::smatch m;
    const std::string file = entry.path().filename().string();
    if (!std::regex_match(file, m, shard_json)) continue;
    const int64_t rank = m[1].length() < 10 ? std::stoll(m[1].str()) : INT64_MAX;
    if (rank >= world) outside.emplace(rank, file);
  }
  if (!outside.empty()) {
    std::string files;
    for (const auto& [rank, file] : outside) files += (files.empty() ? "" : ", ") + file;
    MOE_FAIL(where, ": ", files, " belong to ranks outside a world of ", world,
             ": the folder holds (part of) a save of another world size; save into a fresh "
             "folder");
  }
  for (int r = 0; r < world; ++r) {
    const std::string path = (fs::path(folder) / shard_json_file(r)).string();
    MOE_CHECK(fs::exists(path), where, ": ", path, " is missing: ", rank_str(r, world),
              " has not written its shards (write_index must run after every rank's "
              "write_shards returned)");
  }

  std::map<std::string, TensorRecord> merged;
  for (int r = 0; r < world; ++r) {
    const std::string path = (fs::path(folder) / shard_json_file(r)).string();
    const nlohmann::json j = read_json_file(path, "sharded checkpoint shard description");
    MOE_CHECK(j.is_object(), path, ": expected a JSON object");
    const std::string format = sharded::string_field(j, "format", path);
    MOE_CHECK(format == sharded::kShardFormat, path, ": field 'format' is '", format,
              "', expected '", sharded::kShardFormat, "'");
    const int64_t version = sharded::int_field(j, "version", path);
    MOE_CHECK(version == kShardedCheckpointVersion, path, ": version ", version,
              " is not the version this build writes (", kShardedCheckpointVersion, ")");
    const int64_t rank = sharded::int_field(j, "rank", path);
    MOE_CHECK(rank == r, path, ": field 'rank' is ", rank, ", expected ", r);
    const int64_t shard_world = sharded::int_field(j, "world_size", path);
    MOE_CHECK(shard_world == world, path, ": written by a run of world size ", shard_world,
              ", but the index is for world size ", world);
    const std::string file = sharded::string_field(j, "file", path);
    MOE_CHECK(file == shard_tensor_file(r, world), path, ": field 'file' is '", file,
              "', expected '", shard_tensor_file(r, world), "'");
    MOE_CHECK(fs::exists(fs::path(folder) / file), path, ": its tensor file ", file,
              " is missing from ", folder);
    const auto tensors = j.find("tensors");
    MOE_CHECK(tensors != j.end() && tensors->is_object(), path,
              ": field 'tensors' is missing or not an object");
    for (const auto& [name, tj] : tensors->items()) {
      TensorRecord rec = sharded::parse_tensor(tj, name, path);
      for (const BoxRecord& b : rec.boxes)
        MOE_CHECK(b.file == file, path, ": tensor '", name, "': a box names file '", b.file,
                  "', not this shard's ", file);
      auto [it, fresh] = merged.try_emplace(name, rec);
      if (fresh) continue;
      TensorRecord& m = it->second;
      const std::string first = m.boxes.empty() ? "an earlier shard" : m.boxes.front().source;
      MOE_CHECK(m.dtype == rec.dtype && m.global_shape == rec.global_shape &&
                    m.view_shape == rec.view_shape,
                where, ": tensor '", name, "' is ", m.dtype, " ", shape_str(m.global_shape),
                " view ", shape_str(m.view_shape), " in ", first, " but ", rec.dtype, " ",
                shape_str(rec.global_shape), " view ", shape_str(rec.view_shape), " in ", path);
      m.boxes.insert(m.boxes.end(), rec.boxes.begin(), rec.boxes.end());
    }
  }

  nlohmann::ordered_json index;
  index["format"] = sharded::kFormat;
  index["version"] = kShardedCheckpointVersion;
  index["world_size"] = world;
  index["tensors"] = nlohmann::ordered_json::object();
  for (const auto& [name, rec] : merged) {
    sharded::check_tiling(rec, name, where);
    index["tensors"][name] = sharded::to_json(rec);
  }
  io::write_file_atomically((fs::path(folder) / kShardedIndexFile).string(), index.dump(1) + "\n");
}

}  // namespace moe::checkpoint
