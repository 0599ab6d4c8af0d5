// Sharded checkpoints: tensors saved as the slices of 1 to 4 "ranks" (boxes along dim 0, along
// inner dims, flat ranges of boxes as a distributed optimizer keeps them, a replicated tensor
// written by one rank), in one view or a coarser / finer one, read back bit for bit under every
// other split; dtype conversion on read; corrupt bytes, missing files, gaps, overlaps, other
// worlds and malformed index fields as errors that name their cause.
#include "moe/checkpoint/sharded_checkpoint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "io/safetensors_testing.h"
#include "moe/core/crc32c.h"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;
using io::testing::fails_with;
using io::testing::same_bytes;

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

struct TestTensor {
  std::string name;
  Tensor full;
  Shape views[2];  // two views of it: a save uses one of them
};

std::vector<TestTensor> test_tensors() {
  std::vector<int64_t> steps{123456789012345};
  return {
      {"layers.0.mlp.experts.fc1",
       test::random_normal({4, 6, 5}, DType::f32, 11),
       {{4, 2, 3, 5}, {4, 6, 5}}},
      {"layers.0.mlp.experts.fc2",
       test::random_normal({4, 5, 3}, DType::f16, 12),
       {{4, 5, 3}, {20, 3}}},
      {"layers.0.attn.qkv", test::random_normal({6, 10}, DType::bf16, 13), {{6, 10}, {6, 2, 5}}},
      {"embedding", test::random_normal({9, 4}, DType::bf16, 14), {{9, 4}, {9, 4}}},
      {"final_norm", test::random_normal({7}, DType::f32, 15), {{7}, {7}}},
      {"step", Tensor::from_vector(steps, {}), {{}, {}}},
  };
}

// `parts` + 1 bounds splitting [0, n), uneven when `odd` (not aligned to anything).
std::vector<int64_t> split(int64_t n, int64_t parts, bool odd) {
  std::vector<int64_t> b{0};
  for (int64_t p = 1; p < parts; ++p) {
    int64_t x = n * p / parts + (odd ? (p % 2 ? 1 : -1) : 0);
    b.push_back(std::clamp(x, b.back(), n));
  }
  b.push_back(n);
  return b;
}

// A box of `view` cut along `dim` to [lo, hi).
TensorSlice cut(const Shape& global, const Shape& view, size_t dim, int64_t lo, int64_t hi) {
  TensorSlice s{global, view, std::vector<int64_t>(view.size(), 0), view};
  if (!view.empty()) {
    s.box_offset[dim] = lo;
    s.box_shape[dim] = hi - lo;
  }
  return s;
}

// Each rank's slices of a tensor under split `style`:
//   0 the whole tensor on the last rank (a replicated tensor written by one replica)
//   1 boxes along dim 0 (expert parallel)       2 boxes along the last dim (tensor parallel)
//   3 flat ranges of the whole view, not aligned to rows (distributed optimizer)
//   4 two boxes along dim 0, each split as flat ranges over half the ranks
std::vector<std::vector<TensorSlice>> slices(const Shape& global, const Shape& view, int world,
                                             int style) {
  std::vector<std::vector<TensorSlice>> out(static_cast<size_t>(world));
  const int64_t numel = numel_of(view);
  const size_t last = view.empty() ? 0 : view.size() - 1;
  switch (view.empty() && style != 3 ? 0 : style) {
    case 0:
      out.back().push_back(TensorSlice{global, view});
      break;
    case 1:
    case 2: {
      const size_t dim = style == 1 ? 0 : last;
      const auto b = split(view[dim], world, false);
      for (int r = 0; r < world; ++r) out[r].push_back(cut(global, view, dim, b[r], b[r + 1]));
      break;
    }
    case 3: {
      const auto b = split(numel, world, true);
      for (int r = 0; r < world; ++r) {
        TensorSlice s{global, view};
        s.begin = b[r];
        s.end = b[r + 1];
        out[r].push_back(s);
      }
      break;
    }
    case 4: {
      const int boxes = world >= 2 ? 2 : 1;
      const auto rows = split(view[0], boxes, false);
      const auto owners = split(world, boxes, false);
      for (int p = 0; p < boxes; ++p) {
        TensorSlice box = cut(global, view, 0, rows[p], rows[p + 1]);
        const auto b = split(numel_of(box.box_shape), owners[p + 1] - owners[p], true);
        for (int64_t r = owners[p]; r < owners[p + 1]; ++r) {
          TensorSlice s = box;
          s.begin = b[r - owners[p]];
          s.end = b[r - owners[p] + 1];
          out[r].push_back(s);
        }
      }
      break;
    }
  }
  return out;
}

// The slice's elements of `full`, element by element (flat indices agree in every view).
Tensor expected_piece(const Tensor& full, TensorSlice s) {
  s = s.resolved();
  const size_t size = dtype_size(full.dtype());
  Tensor out = Tensor::empty({s.end - s.begin}, full.dtype());
  for (int64_t k = s.begin; k < s.end; ++k) {
    int64_t rem = k, flat = 0, scale = 1;
    for (size_t d = s.box_shape.size(); d-- > 0;) {
      flat += (rem % s.box_shape[d] + s.box_offset[d]) * scale;
      rem /= s.box_shape[d];
      scale *= s.view_shape[d];
    }
    std::memcpy(static_cast<char*>(out.raw()) + static_cast<size_t>(k - s.begin) * size,
                static_cast<const char*>(full.raw()) + static_cast<size_t>(flat) * size, size);
  }
  return out;
}

struct Mapping {
  int world;
  int style;
};

std::string mapping_str(const Mapping& m) {
  return "world " + std::to_string(m.world) + " style " + std::to_string(m.style);
}

// Per rank: (tensor index, slice) of every tensor under a mapping. Tensor k uses split style
// (style + k) % 5 and its view (style + k + world) % 2, so one save mixes every kind.
std::vector<std::vector<std::pair<size_t, TensorSlice>>> plan(const std::vector<TestTensor>& ts,
                                                              const Mapping& m) {
  std::vector<std::vector<std::pair<size_t, TensorSlice>>> out(static_cast<size_t>(m.world));
  for (size_t k = 0; k < ts.size(); ++k) {
    const int style = (m.style + static_cast<int>(k)) % 5;
    const Shape& view = ts[k].views[(m.style + k + static_cast<size_t>(m.world)) % 2];
    const auto per_rank = slices(ts[k].full.shape(), view, m.world, style);
    for (int r = 0; r < m.world; ++r)
      for (const TensorSlice& s : per_rank[r]) out[r].emplace_back(k, s);
  }
  return out;
}

class ShardedCheckpoint : public io::testing::ScratchFolder {
 protected:
  // Saves the tensors under mapping `m` into a fresh folder (as `world` ranks would, the index
  // written after all shards); returns the folder.
  std::string save(const Mapping& m, const std::string& name) {
    const std::string folder = path(name);
    fs::create_directories(folder);
    const auto per_rank = plan(tensors_, m);
    for (int r = 0; r < m.world; ++r) {
      std::vector<ShardPiece> pieces;
      for (const auto& [k, s] : per_rank[r])
        pieces.push_back({tensors_[k].name, s, expected_piece(tensors_[k].full, s)});
      write_shards(folder, r, m.world, pieces);
    }
    write_index(folder, m.world);
    return folder;
  }
  std::string save_default() { return save({2, 3}, "ckpt"); }

  nlohmann::json read_index(const std::string& folder) {
    std::ifstream in(folder + "/index.json");
    return nlohmann::json::parse(in);
  }
  void write_index_json(const std::string& folder, const nlohmann::json& j) {
    io::testing::write_bytes(folder + "/index.json", j.dump(1));
  }

  std::vector<TestTensor> tensors_ = test_tensors();
};

TEST_F(ShardedCheckpoint, EverySaveReadsBackUnderEveryOtherSplit) {
  std::vector<Mapping> mappings;
  for (int world = 1; world <= 4; ++world)
    for (int style = 0; style < 5; ++style) mappings.push_back({world, style});
  int64_t pieces = 0;
  for (const Mapping& w : mappings) {
    SCOPED_TRACE("saved under " + mapping_str(w));
    const std::string folder =
        save(w, "save_" + std::to_string(w.world) + "_" + std::to_string(w.style));
    const ShardedCheckpointReader reader(folder);
    EXPECT_EQ(reader.world_size(), w.world);
    ASSERT_EQ(reader.tensor_names().size(), tensors_.size());
    for (const TestTensor& t : tensors_) {
      ASSERT_TRUE(reader.has(t.name));
      EXPECT_EQ(reader.global_shape(t.name), t.full.shape());
      EXPECT_EQ(reader.dtype(t.name), t.full.dtype());
      EXPECT_TRUE(same_bytes(reader.read_full(t.name), t.full)) << t.name;
    }
    for (const Mapping& m : mappings) {
      SCOPED_TRACE("read under " + mapping_str(m));
      const auto per_rank = plan(tensors_, m);
      for (int r = 0; r < m.world; ++r)
        for (const auto& [k, s] : per_rank[r]) {
          const TensorSlice full = s.resolved();
          Tensor out = Tensor::empty({full.end - full.begin}, tensors_[k].full.dtype());
          reader.read(tensors_[k].name, s, out);
          ASSERT_TRUE(same_bytes(out, expected_piece(tensors_[k].full, s)))
              << tensors_[k].name << " rank " << r << " box "
              << box_str({full.box_offset, full.box_shape}) << " of view "
              << shape_str(full.view_shape) << " range [" << full.begin << ", " << full.end << ")";
          ++pieces;
        }
    }
  }
  EXPECT_GT(pieces, 2000);
}

TEST_F(ShardedCheckpoint, WritesTheDescribedFiles) {
  const std::string folder = save({2, 3}, "ckpt");
  EXPECT_TRUE(fs::exists(folder + "/shard_0_of_2.safetensors"));
  EXPECT_TRUE(fs::exists(folder + "/shard_1_of_2.safetensors"));
  std::ifstream in(folder + "/shard_1.json");
  const nlohmann::json shard = nlohmann::json::parse(in);
  EXPECT_EQ(shard["rank"], 1);
  EXPECT_EQ(shard["world_size"], 2);
  // fc1 is split 3 here (flat ranges of view [4, 6, 5]).
  const nlohmann::json& fc1 = shard["tensors"]["layers.0.mlp.experts.fc1"];
  EXPECT_EQ(fc1["dtype"], "F32");
  EXPECT_EQ(fc1["global_shape"], (Shape{4, 6, 5}));
  const auto file = io::SafetensorsFile::open(folder + "/shard_1_of_2.safetensors");
  for (const auto& box : fc1["boxes"]) {
    EXPECT_EQ(box["file"], "shard_1_of_2.safetensors");
    const auto bytes = file.view(box["key"].get<std::string>()).bytes();
    EXPECT_EQ(box["crc32c"].get<uint32_t>(), crc32c(bytes.data(), bytes.size()));
  }
  const nlohmann::json index = read_index(folder);
  EXPECT_EQ(index["format"], "moecore-sharded-checkpoint");
  EXPECT_EQ(index["world_size"], 2);
  EXPECT_EQ(index["tensors"].size(), tensors_.size());
}

TEST_F(ShardedCheckpoint, ConvertsTheStoredDtypeOnRead) {
  const std::string folder = save_default();
  const ShardedCheckpointReader reader(folder);
  for (const TestTensor& t : tensors_) {
    if (!is_floating(t.full.dtype())) continue;
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
      SCOPED_TRACE(t.name + " as " + dtype_name(dt));
      EXPECT_TRUE(same_bytes(reader.read_full(t.name, dt), t.full.to(dt)));
      // A piece across stored boxes: the middle half of a refined view's flat range.
      TensorSlice s{t.full.shape(), t.views[0]};
      s.begin = t.full.numel() / 4;
      s.end = t.full.numel() * 3 / 4;
      Tensor out = Tensor::empty({s.end - s.begin}, dt);
      reader.read(t.name, s, out);
      EXPECT_TRUE(same_bytes(out, expected_piece(t.full, s).to(dt)));
    }
  }
}

// The file and key of the first box of `tensor` in the index, and the offset of its first byte.
struct BoxLocation {
  std::string file, key;
  uint64_t offset;
};
BoxLocation locate(const nlohmann::json& index, const std::string& folder,
                   const std::string& tensor) {
  const auto& box = index["tensors"][tensor]["boxes"][0];
  const std::string file = box["file"];
  const auto st = io::SafetensorsFile::open(folder + "/" + file);
  const std::string key = box["key"];
  return {file, key, 8 + st.header_size() + st.info(key).begin};
}

TEST_F(ShardedCheckpoint, AFlippedByteIsACrcErrorNamingFileAndTensor) {
  const std::string folder = save_default();
  const BoxLocation at = locate(read_index(folder), folder, "embedding");
  std::string bytes = io::testing::read_bytes(folder + "/" + at.file);
  bytes[at.offset + 1] ^= 0x10;
  io::testing::write_bytes(folder + "/" + at.file, bytes);

  const ShardedCheckpointReader reader(folder);
  EXPECT_TRUE(fails_with([&] { reader.read_full("embedding"); },
                         {at.file, "embedding", at.key, "CRC-32C", "corrupt"}));
  EXPECT_TRUE(fails_with([&] { reader.verify_all(); }, {at.file, "embedding", "CRC-32C"}));
  EXPECT_TRUE(same_bytes(reader.read_full("final_norm"), tensors_[4].full));  // others are fine
  // Without the check the corrupt value comes through: the CRC is what caught it.
  const ShardedCheckpointReader unchecked(folder, ReaderOptions{.verify_on_read = false});
  EXPECT_FALSE(same_bytes(unchecked.read_full("embedding"), tensors_[3].full));
  EXPECT_THROW(unchecked.verify_all(), Error);
}

TEST_F(ShardedCheckpoint, AMissingShardFileIsNamed) {
  const std::string folder = save_default();
  fs::remove(folder + "/shard_1_of_2.safetensors");
  EXPECT_TRUE(fails_with([&] { ShardedCheckpointReader r(folder); },
                         {"index.json", "shard_1_of_2.safetensors", "missing"}));
  fs::remove(folder + "/index.json");
  EXPECT_TRUE(fails_with([&] { ShardedCheckpointReader r(folder); }, {folder, "index.json"}));
}

TEST_F(ShardedCheckpoint, AGapOrAnOverlapInTheIndexIsAnError) {
  const std::string folder = save_default();
  const nlohmann::json index = read_index(folder);
  const std::string name = "embedding";  // split 1 here: boxes along dim 0
  ASSERT_GE(index["tensors"][name]["boxes"].size(), 2u);
  {
    nlohmann::json gap = index;
    gap["tensors"][name]["boxes"].erase(0);
    write_index_json(folder, gap);
    EXPECT_TRUE(fails_with([&] { ShardedCheckpointReader r(folder); },
                           {"index.json", name, "first missing one is (0, 0", "element 0 "}));
  }
  {
    nlohmann::json overlap = index;
    overlap["tensors"][name]["boxes"].push_back(index["tensors"][name]["boxes"][1]);
    write_index_json(folder, overlap);
    EXPECT_TRUE(fails_with([&] { ShardedCheckpointReader r(folder); },
                           {"index.json", name, "overlap", "exactly one rank"}));
  }
}

TEST_F(ShardedCheckpoint, AReplicatedTensorWrittenByTwoRanksIsAnOverlap) {
  const std::string folder = path("ckpt");
  fs::create_directories(folder);
  const Tensor& norm = tensors_[4].full;
  for (int r = 0; r < 2; ++r) write_shards(folder, r, 2, {{"final_norm", {norm.shape()}, norm}});
  EXPECT_TRUE(fails_with([&] { write_index(folder, 2); },
                         {"final_norm", "overlap", "shard_0.json", "shard_1.json", "replicas"}));
  EXPECT_FALSE(fs::exists(folder + "/index.json"));
}

TEST_F(ShardedCheckpoint, AnElementNoRankWroteIsAGapNamingIt) {
  const std::string folder = path("ckpt");
  fs::create_directories(folder);
  const Tensor& fc1 = tensors_[0].full;  // [4, 6, 5]; rank 1 forgets expert 3's last 7 values
  const TensorSlice first = cut(fc1.shape(), {4, 2, 3, 5}, 0, 0, 2);
  TensorSlice second = cut(fc1.shape(), {4, 2, 3, 5}, 0, 2, 4);
  second.end = 60 - 7;
  write_shards(folder, 0, 2, {{"fc1", first, expected_piece(fc1, first)}});
  write_shards(folder, 1, 2, {{"fc1", second, expected_piece(fc1, second)}});
  EXPECT_TRUE(
      fails_with([&] { write_index(folder, 2); },
                 {"fc1", "113 of its 120", "first missing one is (3, 1, 1, 3)", "element 113 "}));
}

TEST_F(ShardedCheckpoint, AnotherWorldsShardsOrIndexAreErrors) {
  const std::string four = save({4, 1}, "four");
  // write_index for a world of 2 over a world of 4's shards.
  EXPECT_TRUE(fails_with([&] { write_index(four, 2); },
                         {"shard_2.json, shard_3.json", "outside a world of 2"}));
  // A rank that believed in another world size.
  const std::string mixed = path("mixed");
  fs::create_directories(mixed);
  const Tensor& norm = tensors_[4].full;
  write_shards(mixed, 0, 2,
               {{"n", cut({7}, {7}, 0, 0, 3), expected_piece(norm, cut({7}, {7}, 0, 0, 3))}});
  write_shards(mixed, 1, 3,
               {{"n", cut({7}, {7}, 0, 3, 7), expected_piece(norm, cut({7}, {7}, 0, 3, 7))}});
  EXPECT_TRUE(fails_with([&] { write_index(mixed, 2); }, {"shard_1.json", "world size 3"}));
  // A rank that has not written yet.
  EXPECT_TRUE(fails_with([&] { write_index(mixed, 3); }, {"shard_2.json", "is missing", "rank 2"}));
  // The index of a save of world 2 in the folder of a save of world 4.
  const std::string two = save({2, 1}, "two");
  fs::copy_file(two + "/index.json", four + "/index.json", fs::copy_options::overwrite_existing);
  EXPECT_TRUE(fails_with([&] { ShardedCheckpointReader r(four); },
                         {"index.json", "shard_0_of_2.safetensors", "missing"}));
}

TEST_F(ShardedCheckpoint, MalformedIndexFieldsAreNamed) {
  const std::string folder = save_default();
  const nlohmann::json index = read_index(folder);
  const std::string name = "embedding";
  struct Case {
    std::function<void(nlohmann::json&)> mutate;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases{
      {[&](auto& j) { j["tensors"][name]["view_shape"] = "x"; }, {name, "'view_shape'"}},
      {[&](auto& j) {
         j["tensors"][name]["view_shape"] = {4, 9};
       },
       {name, "view_shape [4, 9]"}},
      {[&](auto& j) { j["tensors"][name]["dtype"] = "Q8"; }, {name, "'dtype'", "Q8"}},
      {[&](auto& j) { j["tensors"][name].erase("global_shape"); }, {name, "'global_shape'"}},
      {[&](auto& j) { j["tensors"][name]["boxes"][0].erase("crc32c"); },
       {name, "boxes[0]", "'crc32c'"}},
      {[&](auto& j) { j["tensors"][name]["boxes"][0]["crc32c"] = -1; }, {name, "'crc32c'"}},
      {[&](auto& j) {
         j["tensors"][name]["boxes"][0]["offset"] = {50, 0};
       },
       {name, "boxes[0]", "not inside"}},
      {[&](auto& j) { j["tensors"][name]["boxes"][0]["file"] = "../x"; }, {name, "'file'"}},
      {[&](auto& j) { j["version"] = 2; }, {"version 2"}},
      {[&](auto& j) { j.erase("world_size"); }, {"'world_size'"}},
      {[&](auto& j) { j["format"] = "other"; }, {"'format'"}},
  };
  for (const Case& c : cases) {
    nlohmann::json bad = index;
    c.mutate(bad);
    write_index_json(folder, bad);
    std::vector<std::string> parts = c.parts;
    parts.push_back(folder + "/index.json");
    bool ok = false;
    try {
      ShardedCheckpointReader r(folder);
    } catch (const Error& e) {
      ok = true;
      for (const std::string& p : parts)
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << p << " in " << e.what();
    }
    EXPECT_TRUE(ok) << bad.dump();
  }
  io::testing::write_bytes(folder + "/index.json", "{\"format\": ");
  EXPECT_TRUE(fails_with([&] { ShardedCheckpointReader r(folder); }, {"index.json", "JSON"}));
}

TEST_F(ShardedCheckpoint, AKeyOrShapeTheFileLacksIsNamed) {
  const std::string folder = save_default();
  nlohmann::json index = read_index(folder);
  index["tensors"]["embedding"]["boxes"][0]["key"] = "nothing";
  write_index_json(folder, index);
  const ShardedCheckpointReader reader(folder);
  EXPECT_TRUE(
      fails_with([&] { reader.read_full("embedding"); }, {"has no tensor 'nothing'", "embedding"}));
}

TEST_F(ShardedCheckpoint, BadRequestsAreErrors) {
  const std::string folder = save_default();
  const ShardedCheckpointReader reader(folder);
  const std::string fc1 = "layers.0.mlp.experts.fc1";
  Tensor out = Tensor::empty({10}, DType::f32);
  EXPECT_TRUE(
      fails_with([&] { reader.read("nothing", TensorSlice{}, out); }, {"no tensor 'nothing'"}));
  EXPECT_TRUE(fails_with(
      [&] {
        reader.read(fc1, {4, 6, 5}, {0, 0, 0}, {1, 6, 5}, 0, 30, out);
      },
      {fc1, "does not hold 30"}));
  EXPECT_TRUE(fails_with(
      [&] {
        reader.read(fc1, {4, 6, 5}, {3, 0, 0}, {2, 6, 5}, 0, 10, out);
      },
      {fc1, "not inside the requested view"}));
  EXPECT_TRUE(fails_with(
      [&] {
        reader.read(fc1, {4, 5, 6}, {0, 0, 0}, {1, 5, 6}, 0, 10, out);
      },
      {fc1, "[4, 5, 6]", "not row-major reshapes"}));
  EXPECT_TRUE(fails_with(
      [&] {
        reader.read(fc1, TensorSlice{{6, 4, 5}}, out);
      },
      {fc1, "global shape [4, 6, 5]"}));
  Tensor none;
  EXPECT_THROW(reader.read(fc1, {4, 6, 5}, {0, 0, 0}, {1, 6, 5}, 0, 10, none), Error);
}

TEST_F(ShardedCheckpoint, BadPiecesAreRejectedBeforeWriting) {
  const std::string folder = path("ckpt");
  fs::create_directories(folder);
  const Tensor x = Tensor::zeros({4, 3}, DType::f32);
  auto write = [&](std::vector<ShardPiece> pieces) { write_shards(folder, 0, 1, pieces); };
  EXPECT_TRUE(fails_with(
      [&] {
        write({{"x", {{4, 3}}, x.rows(0, 2)}});
      },
      {"'x'", "6 elements", "[0, 12)", "rank 0 of 1"}));
  EXPECT_TRUE(fails_with(
      [&] {
        write({{"x", {{4, 3}, {}, {3, 0}, {2, 3}}, x}});
      },
      {"'x'", "not inside view_shape"}));
  EXPECT_TRUE(fails_with([&] { write({{"x", {{4, 3}, {3, 4}}, x}}); }, {"'x'", "row-major"}));
  EXPECT_TRUE(fails_with(
      [&] {
        write({{"x", cut({4, 3}, {4, 3}, 0, 0, 2), x.rows(0, 2)},
               {"x", cut({4, 3}, {4, 3}, 0, 2, 4), x.rows(2, 2).to(DType::bf16)}});
      },
      {"'x'", "given twice"}));
  EXPECT_THROW(write_shards(folder, 1, 1, {}), Error);
  EXPECT_TRUE(fs::is_empty(folder));
}

}  // namespace
}  // namespace moe::checkpoint
