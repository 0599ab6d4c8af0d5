// The bad-input sweep of the safetensors reader (docs/bad-input.md): a file written by
// write_safetensors and a sharded checkpoint written by write_safetensors_sharded, mutated at the
// byte level (the 8-byte header length included) and through their JSON (the header, with the
// length fixed up so the parser sees it; the index). Whatever opens is then used as a loader
// uses it: every tensor listed, viewed and loaded.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fuzz/sweep.h"
#include "moe/io/safetensors.h"

namespace moe::io {
namespace {

using sweep::Mutant;

NamedTensors fixture_tensors() {
  NamedTensors t;
  t.emplace_back("a.weight", Tensor::full({3, 4}, 0.5, DType::f32));
  t.emplace_back("b.bias", Tensor::full({5}, 1.25, DType::bf16));
  t.emplace_back("c.index", Tensor::from_vector(std::vector<int64_t>{1, -2, 3, 4}, {2, 2}));
  t.emplace_back("d.mask", Tensor::full({7}, 1, DType::u8));
  t.emplace_back("e.half", Tensor::full({2, 3}, -2.0, DType::f16));
  t.emplace_back("f.empty", Tensor::zeros({0, 4}, DType::f32));
  t.emplace_back("g.scalar", Tensor::full({}, 3.0, DType::f64));
  t.emplace_back("h.fp8", Tensor::full({6}, 0.25, DType::fp8_e4m3));
  return t;
}

// The format's words, for string values of the header: every dtype, unknown ones, the
// reserved key.
const std::vector<std::string>& header_words() {
  static const std::vector<std::string> words{
      "BOOL", "F4",  "F6_E2M3", "U8",  "I8",  "F8_E5M2",      "F8_E4M3", "F8_E8M0", "I16",
      "U16",  "F16", "BF16",    "I32", "U32", "F32",          "C64",     "F64",     "I64",
      "U64",  "f32", "F32 ",    "",    "X",   "__metadata__", "a.weight"};
  return words;
}

// What a loader does with a file that opened.
template <class Source>
void use(const Source& source) {
  (void)source.metadata();
  for (const std::string& name : source.names()) {
    const SafetensorsTensorInfo& info = source.info(name);
    const SafetensorsView view = source.view(name);
    uint64_t sum = 0;
    for (const std::byte b : view.bytes()) sum += static_cast<uint8_t>(b);
    (void)sum;
    if (info.dtype) (void)source.load(name, Device::cpu(), DType::f32);
  }
}

struct SplitFile {
  std::string header;  // the JSON text
  std::string data;    // the data buffer
};

SplitFile split(const std::string& file) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[static_cast<size_t>(i)]);
  return {file.substr(8, n), file.substr(8 + n)};
}

std::string join(const std::string& header, const std::string& data) {
  return sweep::le_bytes(header.size(), 8) + header + data;
}

TEST(SafetensorsSweep, SingleFile) {
  sweep::ScratchDir dir;
  const std::string path = dir.path("sweep.safetensors");
  write_safetensors(path, fixture_tensors(), {{"format", "pt"}});
  const std::string valid = sweep::read_file(path);
  const SplitFile parts = split(valid);

  sweep::Sweep sweep("safetensors file");
  const auto run = [&](const Mutant& m) {
    sweep::write_file(path, m.bytes);
    return sweep.check(m, {"sweep.safetensors"}, [&] {
      use(SafetensorsFile::open(path));
      use(SafetensorsCollection::open(path));
    });
  };
  EXPECT_TRUE(run({"unchanged", valid, ""}));
  for (const Mutant& m : sweep::truncations(valid)) run(m);
  for (const Mutant& m : sweep::field_values(valid, {{"header length", 0, 8}})) run(m);
  // Header documents with the length fixed up, so that each reaches the JSON checks.
  for (Mutant m : sweep::json_document_cases(parts.header)) {
    m.what = "header: " + m.what;
    m.bytes = join(m.bytes, parts.data);
    run(m);
  }
  const std::vector<std::pair<std::string, std::string>> entries{
      {"huge offsets",
       R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,0]}})"},
      {"offsets past the data",
       R"({"x":{"dtype":"U8","shape":[4611686018427387904],"data_offsets":[0,4611686018427387904]}})"},
      {"a shape of 2^62 x 4",
       R"({"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})"},
      {"a shape overflowing 64 bits",
       R"({"x":{"dtype":"F64","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})"},
      {"a negative dimension", R"({"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})"},
      {"a zero dimension with offsets",
       R"({"x":{"dtype":"U8","shape":[0,9223372036854775807],"data_offsets":[0,0]}})"},
      {"F4 of an odd count", R"({"x":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})"},
      {"a 100000-dimension shape",
       [] {
         std::string s = R"({"x":{"dtype":"U8","shape":[1)";
         for (int i = 0; i < 100000; ++i) s += ",1";
         return s + R"(],"data_offsets":[0,1]}})";
       }()},
      {"overlapping tensors",
       R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"y":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})"},
      {"a duplicate tensor name",
       R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})"},
      {"metadata not strings",
       R"({"__metadata__":{"a":[1,2]},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})"},
  };
  for (const auto& [what, header] : entries) {
    const std::string data(header.find("\"y\"") != std::string::npos ? 3 : 1, '\x01');
    run({"header: " + what, join(header, data), ""});
  }

  for (const uint64_t i : sweep::random_cases(400)) {
    run(sweep::random_mutant("safetensors file", i, [&](sweep::Rng& rng) {
      if (rng.percent(35)) return sweep::mutate_bytes(valid, rng);
      Mutant m = sweep::mutate_json(parts.header, rng, header_words());
      m.what = "header: " + m.what;
      m.bytes = join(m.bytes, parts.data);
      return m;
    }));
  }
  EXPECT_GT(sweep.refused(), 0);
}

TEST(SafetensorsSweep, ShardedCheckpoint) {
  sweep::ScratchDir dir;
  const ShardedWriteResult written =
      write_safetensors_sharded(dir.dir().string(), fixture_tensors(), 64, {{"format", "pt"}});
  ASSERT_FALSE(written.index_file.empty());
  ASSERT_GE(written.files.size(), 3u);
  const std::string index_path = dir.path(written.index_file);
  const std::string valid_index = sweep::read_file(index_path);
  std::vector<std::string> valid_shards;
  for (const std::string& f : written.files) valid_shards.push_back(sweep::read_file(dir.path(f)));

  std::vector<std::string> words = written.files;
  for (const char* w : {"../model.safetensors", "/etc/passwd", "", ".", "..", "sub/x.safetensors",
                        "model.safetensors.index.json", "missing.safetensors", "a.weight"})
    words.push_back(w);

  sweep::Sweep sweep("sharded safetensors");
  // Index mutations may name the index or a shard it leads to; shard mutations name the shard.
  std::vector<std::string> index_names = written.files;
  index_names.push_back(written.index_file);
  const auto open = [&] {
    use(SafetensorsCollection::open(dir.dir().string()));
    use(SafetensorsCollection::open(index_path));
  };
  const auto run_index = [&](Mutant m) {
    m.what = "index: " + m.what;
    sweep::write_file(index_path, m.bytes);
    const bool accepted = sweep.check(m, index_names, open);
    sweep::write_file(index_path, valid_index);
    return accepted;
  };
  const auto run_shard = [&](size_t shard, Mutant m) {
    const std::string path = dir.path(written.files[shard]);
    m.what = written.files[shard] + ": " + m.what;
    sweep::write_file(path, m.bytes);
    const bool accepted = sweep.check(m, {written.files[shard]}, open);
    sweep::write_file(path, valid_shards[shard]);
    return accepted;
  };

  EXPECT_TRUE(run_index({"unchanged", valid_index, ""}));
  for (const Mutant& m : sweep::truncations(valid_index, 24)) run_index(m);
  for (const Mutant& m : sweep::json_document_cases(valid_index)) run_index(m);
  for (const Mutant& m : sweep::truncations(valid_shards[0], 16)) run_shard(0, m);
  for (const uint64_t i : sweep::random_cases(200)) {
    sweep::Rng pick(sweep::case_seed(sweep::base_seed(), "sharded shard", i));
    if (pick.percent(60)) {
      run_index(sweep::random_mutant("sharded safetensors", i, [&](sweep::Rng& rng) {
        return rng.percent(80) ? sweep::mutate_json(valid_index, rng, words)
                               : sweep::mutate_bytes(valid_index, rng);
      }));
    } else {
      const size_t shard = pick.below(valid_shards.size());
      run_shard(shard, sweep::random_mutant("sharded safetensors", i, [&](sweep::Rng& rng) {
                  if (rng.percent(40)) return sweep::mutate_bytes(valid_shards[shard], rng);
                  const SplitFile parts = split(valid_shards[shard]);
                  Mutant m = sweep::mutate_json(parts.header, rng, header_words());
                  m.what = "header: " + m.what;
                  m.bytes = join(m.bytes, parts.data);
                  return m;
                }));
    }
  }
  EXPECT_GT(sweep.refused(), 0);
}

}  // namespace
}  // namespace moe::io
