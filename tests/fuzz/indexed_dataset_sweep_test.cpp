// The bad-input sweep of Megatron's indexed dataset reader (docs/bad-input.md): a .bin/.idx
// pair written by IndexedDatasetWriter, the .idx's header fields (version, dtype code, the
// sequence and document counts) and array entries set to huge, negative and boundary values,
// both files truncated and mutated at random. A dataset that opens is then read as training
// reads it: every token of every sequence, and every sequence's bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fuzz/sweep.h"
#include "moe/data/indexed_dataset.h"
#include "moe/data/indexed_dataset_writer.h"

namespace moe::data {
namespace {

using sweep::Mutant;

// Sequences of 3, 0, 5, 1 and 2 tokens in documents [0, 2), [2, 2) (empty), [2, 5).
void write_fixture(const std::string& prefix, IndexedDType dtype) {
  IndexedDatasetWriter writer(prefix, dtype);
  const std::vector<std::vector<int64_t>> sequences{{1, 2, 3}, {}, {4, 5, 6, 7, 8}, {9}, {10, 11}};
  for (size_t s = 0; s < sequences.size(); ++s) {
    writer.add_sequence(sequences[s]);
    if (s == 1) {
      writer.end_document();
      writer.end_document();
    }
  }
  writer.finalize();
}

void read_everything(const std::string& prefix) {
  const IndexedDataset dataset(prefix);
  std::vector<int64_t> out;
  for (int64_t s = 0; s < dataset.num_sequences(); ++s) {
    const std::vector<int64_t> tokens = dataset.sequence(s);
    const std::span<const std::byte> bytes = dataset.sequence_bytes(s);
    uint64_t sum = 0;
    for (const std::byte b : bytes) sum += static_cast<uint8_t>(b);
    for (const int64_t t : tokens) sum += static_cast<uint64_t>(t);
    (void)sum;
    const int32_t length = dataset.sequence_lengths()[static_cast<size_t>(s)];
    if (length >= 2) {
      out.resize(1);
      dataset.read(s, length - 1, 1, out.data());
    }
  }
  for (const int64_t d : dataset.document_indices()) (void)d;
}

TEST(IndexedDatasetSweep, IndexAndData) {
  sweep::ScratchDir dir;
  const std::string prefix = dir.path("corpus_text_document");
  write_fixture(prefix, IndexedDType::int32);
  const std::string idx_path = index_file_path(prefix), bin_path = data_file_path(prefix);
  const std::string valid_idx = sweep::read_file(idx_path), valid_bin = sweep::read_file(bin_path);
  const uint64_t S = 5, D = 4;
  ASSERT_EQ(valid_idx.size(), 34 + 12 * S + 8 * D);

  sweep::Sweep sweep("indexed dataset");
  const auto run = [&](const std::string& path, const std::string& valid, Mutant m) {
    m.what = (path == idx_path ? ".idx: " : ".bin: ") + m.what;
    sweep::write_file(path, m.bytes);
    const bool accepted =
        sweep.check(m, {"corpus_text_document"}, [&] { read_everything(prefix); });
    sweep::write_file(path, valid);
    return accepted;
  };
  const auto run_idx = [&](const Mutant& m) { return run(idx_path, valid_idx, m); };
  const auto run_bin = [&](const Mutant& m) { return run(bin_path, valid_bin, m); };

  EXPECT_TRUE(run_idx({"unchanged", valid_idx, ""}));
  for (const Mutant& m : sweep::truncations(valid_idx)) run_idx(m);
  for (const Mutant& m : sweep::truncations(valid_bin, 16)) run_bin(m);
  const size_t lengths = 34, pointers = 34 + 4 * S, documents = 34 + 12 * S;
  const std::vector<sweep::Field> fields{
      {"version", 9, 8},
      {"dtype code", 17, 1},
      {"sequence count", 18, 8},
      {"document count", 26, 8},
      {"length of sequence 0", lengths, 4},
      {"length of sequence 4", lengths + 16, 4},
      {"pointer of sequence 0", pointers, 8},
      {"pointer of sequence 2", pointers + 16, 8},
      {"pointer of sequence 4", pointers + 32, 8},
      {"document index 0", documents, 8},
      {"document index 2", documents + 16, 8},
      {"last document index", documents + 24, 8},
  };
  for (const Mutant& m : sweep::field_values(valid_idx, fields)) run_idx(m);
  // Negative values of the signed fields (interesting_integers covers them as two's
  // complement only at full width).
  for (const sweep::Field& f : fields) {
    if (f.width < 4) continue;
    std::string bytes = valid_idx;
    bytes.replace(f.offset, static_cast<size_t>(f.width), sweep::le_bytes(~uint64_t{0}, f.width));
    run_idx({f.name + " = -1", bytes, ""});
  }
  // The multimodal layout: a mode byte per sequence.
  run_idx({"a mode byte per sequence appended", valid_idx + std::string(S, '\0'), ""});

  for (const uint64_t i : sweep::random_cases(300)) {
    sweep::Rng which(sweep::case_seed(sweep::base_seed(), "indexed dataset file", i));
    if (which.percent(75)) {
      run_idx(sweep::random_mutant("indexed dataset", i, [&](sweep::Rng& rng) {
        return sweep::mutate_bytes(valid_idx, rng, valid_idx.size());
      }));
    } else {
      run_bin(sweep::random_mutant("indexed dataset", i, [&](sweep::Rng& rng) {
        return sweep::mutate_bytes(valid_bin, rng);
      }));
    }
  }
  EXPECT_GT(sweep.refused(), 0);
}

// Float datasets (dtype codes 6 and 7) hold their ids as floats: NaN, infinities, fractions and
// values beyond int64 must be refused when read, naming the .bin.
TEST(IndexedDatasetSweep, FloatTokens) {
  sweep::ScratchDir dir;
  const std::string prefix = dir.path("floats_text_document");
  write_fixture(prefix, IndexedDType::float64);
  const std::string bin_path = data_file_path(prefix);
  const std::string valid_bin = sweep::read_file(bin_path);

  sweep::Sweep sweep("indexed dataset (float64 tokens)");
  const double values[] = {std::numeric_limits<double>::quiet_NaN(),
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity(),
                           0.5,
                           -1.0,
                           9.3e18,
                           -9.3e18,
                           1e300,
                           std::numeric_limits<double>::denorm_min(),
                           -0.0};
  EXPECT_TRUE(sweep.check({"unchanged", valid_bin, ""}, {"floats_text_document"},
                          [&] { read_everything(prefix); }));
  for (const double v : values) {
    for (const size_t token : {size_t{0}, size_t{10}}) {
      std::string bytes = valid_bin;
      uint64_t bits;
      std::memcpy(&bits, &v, 8);
      bytes.replace(token * 8, 8, sweep::le_bytes(bits, 8));
      sweep::write_file(bin_path, bytes);
      sweep.check({"token " + std::to_string(token) + " = " + std::to_string(v), bytes, ""},
                  {"floats_text_document"}, [&] { read_everything(prefix); });
    }
  }
  EXPECT_GT(sweep.refused(), 0);
}

}  // namespace
}  // namespace moe::data
