// The bad-input sweep of the .npy readers (docs/bad-input.md): read_npy (float32 arrays of
// `moe forward`), read_index_npy (the dataset index cache's integer arrays, every dtype), and
// the GPTDataset index cache as training loads it, with checksums.json re-signed after each
// mutation so that the cache's own checks, not only its CRC, meet the damage. Mutants change
// the magic and version, the header length, the header dict (descr, fortran_order, shape: huge,
// negative, overflowing products) and the data.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/memory_corpus.h"
#include "fuzz/sweep.h"
#include "moe/core/crc32c.h"
#include "moe/data/gpt_dataset.h"
#include "moe/data/index_npy.h"
#include "moe/io/npy.h"

namespace moe {
namespace {

using sweep::Mutant;

// Header-dict edits: the shape and the dtype are where a size comes from.
std::vector<Mutant> header_cases(const std::string& valid) {
  const size_t open = valid.find('{'), close = valid.find('}');
  const std::string dict = valid.substr(open, close + 1 - open);
  std::vector<Mutant> out;
  const auto with_dict = [&](const std::string& what, const std::string& d) {
    // Keep the 64-byte alignment when the new dict fits the old padding, else grow the header.
    std::string header = d;
    const size_t old_len = static_cast<size_t>(static_cast<uint8_t>(valid[8])) |
                           (static_cast<size_t>(static_cast<uint8_t>(valid[9])) << 8);
    if (header.size() + 1 <= old_len) header.append(old_len - 1 - header.size(), ' ');
    header += '\n';
    std::string bytes = valid.substr(0, 8) + sweep::le_bytes(header.size(), 2) + header +
                        valid.substr(10 + old_len);
    out.push_back({what, std::move(bytes), ""});
  };
  const std::string descr = dict.substr(dict.find("'descr': '") + 10, 3);
  for (const char* shape :
       {"()", "(0,)", "(4611686018427387904,)", "(4294967296, 4294967296)",
        "(9223372036854775807, 2)", "(99999999999999999999,)", "(-1,)", "(3, -2)", "(1L,)", "(,)",
        "(", ")", "3", "(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)", "(2 3)",
        "(0, 4611686018427387904)", "(18446744073709551616,)", "(0x10,)"}) {
    with_dict(std::string("shape ") + shape,
              "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }");
  }
  for (const char* d : {"<f4", "<f8", "<i8", "<i4", "<i2", "<u4", "|u1", ">f4", ">i8", "<c8", "|b1",
                        "O", "<U8", "", "<f4'", "'"}) {
    with_dict(std::string("descr '") + d + "'",
              "{'descr': '" + std::string(d) + "', 'fortran_order': False, 'shape': (3,), }");
  }
  with_dict("fortran_order True",
            "{'descr': '" + descr + "', 'fortran_order': True, 'shape': (3,), }");
  with_dict("no shape", "{'descr': '" + descr + "', 'fortran_order': False, }");
  with_dict("no descr", "{'fortran_order': False, 'shape': (3,), }");
  with_dict("an empty dict", "{}");
  with_dict("not a dict", "hello");
  with_dict("keys twice",
            "{'descr': '" + descr +
                "', 'shape': (3,), 'descr': '<f8', 'fortran_order': False, 'shape': (99,), }");
  with_dict("double quotes",
            "{\"descr\": \"" + descr + "\", \"fortran_order\": False, \"shape\": (3,), }");
  return out;
}

std::vector<Mutant> preamble_cases(const std::string& valid) {
  std::vector<Mutant> out;
  for (const uint8_t major : {0, 2, 3, 4, 255}) {
    std::string b = valid;
    b[6] = static_cast<char>(major);
    out.push_back({"version " + std::to_string(major), b, ""});
  }
  for (const uint64_t len :
       {uint64_t{0}, uint64_t{1}, uint64_t{0xffff}, valid.size(), uint64_t{0xffffffff}}) {
    std::string v2 = valid.substr(0, 6) + std::string("\x02\x00", 2) + sweep::le_bytes(len, 4) +
                     valid.substr(10);
    out.push_back({"version 2 with header length " + sweep::hex(len), v2, ""});
  }
  return out;
}

// Sweeps one .npy reader over `valid` (written at `path`).
void sweep_npy(sweep::Sweep& sweep, const std::string& path, const std::string& name,
               const std::string& valid, const std::function<void()>& read, int64_t randoms) {
  const auto run = [&](Mutant m) {
    m.what = name + ": " + m.what;
    sweep::write_file(path, m.bytes);
    return sweep.check(m, {name}, read);
  };
  EXPECT_TRUE(run({"unchanged", valid, ""}));
  for (const Mutant& m : sweep::truncations(valid, 16)) run(m);
  for (const Mutant& m : sweep::field_values(valid, {{"header length", 8, 2}})) run(m);
  for (const Mutant& m : header_cases(valid)) run(m);
  for (const Mutant& m : preamble_cases(valid)) run(m);
  for (const uint64_t i : sweep::random_cases(randoms)) {
    run(sweep::random_mutant(
        "npy " + name, i, [&](sweep::Rng& rng) { return sweep::mutate_bytes(valid, rng, 128); }));
  }
}

TEST(NpySweep, FloatArrays) {
  sweep::ScratchDir dir;
  const std::string path = dir.path("logits.npy");
  io::write_npy(path, Tensor::full({2, 3, 4}, 0.5, DType::f32));
  sweep::Sweep sweep(".npy (read_npy)");
  sweep_npy(
      sweep, path, "logits.npy", sweep::read_file(path),
      [&] {
        const Tensor t = io::read_npy(path);
        (void)t.to(DType::f64).to_double_vector();
      },
      150);
  EXPECT_GT(sweep.refused(), 0);
}

TEST(NpySweep, IndexArrays) {
  sweep::ScratchDir dir;
  sweep::Sweep sweep(".npy (read_index_npy)");
  const std::vector<int64_t> values{0, 1, 2, 3, 4, 5, 6, 7};
  for (const data::IndexDType dtype : {data::IndexDType::i16, data::IndexDType::i32,
                                       data::IndexDType::i64, data::IndexDType::u32}) {
    const std::string name = std::string("index_") + (data::index_dtype_descr(dtype) + 1) + ".npy";
    const std::string path = dir.path(name);
    const std::vector<int64_t> shape =
        dtype == data::IndexDType::i64 ? std::vector<int64_t>{4, 2} : std::vector<int64_t>{8};
    data::write_index_npy(path, dtype, shape, values);
    sweep_npy(
        sweep, path, name, sweep::read_file(path),
        [&] {
          const data::IndexArray a = data::read_index_npy(path);
          int64_t sum = 0;
          for (const int64_t v : a.values) sum += v;
          (void)sum;
        },
        60);
  }
  EXPECT_GT(sweep.refused(), 0);
}

// The cache as `moe train --data-path` meets it on a second run: every file mutated, then
// checksums.json re-signed so that the mutant reaches the shape and range checks.
TEST(NpySweep, GPTDatasetIndexCache) {
  sweep::ScratchDir dir;
  auto corpus =
      std::make_shared<data::testing::MemoryCorpus>(data::testing::random_lengths(30, 40, 5));
  data::GPTDatasetConfig config;
  config.sequence_length = 8;
  config.random_seed = 3;
  config.split = "969,30,1";
  config.cache_dir = dir.dir().string();
  const auto load = [&] {
    const data::GPTDataset d(corpus, "mem", {0, 30}, 60, data::Split::train, config);
    for (int64_t i = 0; i < d.size(); ++i) (void)d.sample(i);
  };
  const data::GPTDataset built(corpus, "mem", {0, 30}, 60, data::Split::train, config);
  const std::string checksums_path = built.cache_path("checksums.json");
  const std::string cache_prefix = std::filesystem::path(built.cache_path("")).filename().string();
  const std::string valid_checksums = sweep::read_file(checksums_path);

  sweep::Sweep sweep("GPTDataset index cache");
  for (const char* file : {"document_index.npy", "sample_index.npy", "shuffle_index.npy"}) {
    const std::string path = built.cache_path(file);
    const std::string valid = sweep::read_file(path);
    const auto run = [&](Mutant m, bool resign) {
      m.what = std::string(file) + (resign ? " (re-signed): " : ": ") + m.what;
      sweep::write_file(path, m.bytes);
      if (resign) {
        nlohmann::json sums = nlohmann::json::parse(valid_checksums);
        sums[file] = crc32c(m.bytes.data(), m.bytes.size());
        sweep::write_file(checksums_path, sums.dump(4));
      }
      // A file that disagrees with another may be reported as the other: any file of the
      // cache names the cause (the message says to remove them all).
      const bool accepted = sweep.check(m, {cache_prefix}, load);
      sweep::write_file(path, valid);
      sweep::write_file(checksums_path, valid_checksums);
      return accepted;
    };
    EXPECT_TRUE(run({"unchanged", valid, ""}, false));
    for (const Mutant& m : sweep::truncations(valid, 8)) run(m, true);
    for (const Mutant& m : header_cases(valid)) run(m, true);
    // Every value of the array set to each interesting integer, in turn for a few positions.
    const size_t data_offset = io::parse_npy_layout(valid, path).data_offset;
    const size_t item = valid.find("<i8") != std::string::npos ? 8 : 4;
    const size_t count = (valid.size() - data_offset) / item;
    std::vector<sweep::Field> fields;
    for (const size_t k : {size_t{0}, size_t{1}, count / 2, count - 2, count - 1})
      fields.push_back(
          {"value " + std::to_string(k), data_offset + k * item, static_cast<int>(item)});
    for (const Mutant& m : sweep::field_values(valid, fields)) run(m, true);
    for (const uint64_t i : sweep::random_cases(60)) {
      run(sweep::random_mutant(
              std::string("gpt cache ") + file, i,
              [&](sweep::Rng& rng) { return sweep::mutate_bytes(valid, rng, valid.size()); }),
          i % 4 != 0);
    }
  }
  // checksums.json itself.
  for (const Mutant& m : sweep::json_document_cases(valid_checksums)) {
    sweep::write_file(checksums_path, m.bytes);
    sweep.check({"checksums.json: " + m.what, m.bytes, ""}, {cache_prefix}, load);
  }
  sweep::write_file(checksums_path, valid_checksums);
  EXPECT_GT(sweep.refused(), 0);
}

}  // namespace
}  // namespace moe
