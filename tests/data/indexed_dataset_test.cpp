// Megatron's indexed dataset (.bin/.idx): the exact bytes the writer produces, round trips of
// every dtype, validation of damaged files (each error names the file), merging, and
// `moe preprocess` on small inputs (same files whatever the number of workers).
#include "moe/data/indexed_dataset.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors_testing.h"
#include "moe/core/error.h"
#include "moe/data/indexed_dataset_writer.h"
#include "moe/data/preprocess.h"
#include "moe/data/tokenizer.h"

namespace moe::data {
namespace {

using io::testing::le_u64;
using io::testing::read_bytes;
using io::testing::ScratchFolder;
using io::testing::write_bytes;
using Sequences = std::vector<std::vector<int64_t>>;
namespace fs = std::filesystem;

// Little-endian bytes of an integer of `size` bytes.
std::string le(uint64_t n, int size) {
  std::string out(static_cast<size_t>(size), '\0');
  for (int i = 0; i < size; ++i, n >>= 8) out[static_cast<size_t>(i)] = static_cast<char>(n & 0xff);
  return out;
}

// Runs `f`, expects a moe::Error whose message holds every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one naming " << parts.front();
  } catch (const Error& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message: " << e.what() << "\nmissing: " << part;
  }
}

// Writes `sequences`, ending a document after the sequence indices in `document_ends`
// (exclusive ends, like Megatron's document indices without the leading 0).
void write_dataset(const std::string& prefix, IndexedDType dtype, const Sequences& sequences,
                   const std::vector<int64_t>& document_ends) {
  IndexedDatasetWriter writer(prefix, dtype);
  size_t next_end = 0;
  for (size_t s = 0; s <= sequences.size(); ++s) {
    while (next_end < document_ends.size() && document_ends[next_end] == static_cast<int64_t>(s)) {
      writer.end_document();
      ++next_end;
    }
    if (s < sequences.size()) writer.add_sequence(sequences[s]);
  }
  writer.finalize();
}

Sequences read_all(const IndexedDataset& dataset) {
  Sequences out;
  for (int64_t s = 0; s < dataset.num_sequences(); ++s) out.push_back(dataset.sequence(s));
  return out;
}

class IndexedDatasetTest : public ScratchFolder {};

TEST_F(IndexedDatasetTest, WritesMegatronsExactBytes) {
  // Three sequences (one empty) in two documents, uint16: the layout of indexed_dataset.h,
  // assembled here byte by byte.
  const std::string prefix = path("tiny");
  write_dataset(prefix, IndexedDType::uint16, {{1, 2, 3}, {}, {65535}}, {2, 3});
  std::string idx = std::string("MMIDIDX\0\0", 9) + le_u64(1) + le(8, 1) + le_u64(3) + le_u64(3);
  idx += le(3, 4) + le(0, 4) + le(1, 4);     // lengths, int32
  idx += le_u64(0) + le_u64(6) + le_u64(6);  // pointers: running byte offsets
  idx += le_u64(0) + le_u64(2) + le_u64(3);  // document indices
  EXPECT_EQ(read_bytes(prefix + ".idx"), idx);
  EXPECT_EQ(read_bytes(prefix + ".bin"), le(1, 2) + le(2, 2) + le(3, 2) + le(65535, 2));
  EXPECT_EQ(listing(), (std::set<std::string>{"tiny.bin", "tiny.idx"}));  // no temporaries

  const IndexedDataset dataset(prefix);
  EXPECT_EQ(dataset.dtype(), IndexedDType::uint16);
  EXPECT_EQ(dataset.num_documents(), 2);
  EXPECT_EQ(dataset.num_tokens(), 4);
  EXPECT_EQ(dataset.description(), prefix);
}

TEST_F(IndexedDatasetTest, EveryDtypeRoundTrips) {
  struct Case {
    IndexedDType dtype;
    int code;
    int64_t size;
    int64_t low, high;  // extreme tokens the dtype holds
  };
  const std::vector<Case> cases = {
      {IndexedDType::uint8, 1, 1, 0, 255},
      {IndexedDType::int8, 2, 1, -128, 127},
      {IndexedDType::int16, 3, 2, -32768, 32767},
      {IndexedDType::int32, 4, 4, std::numeric_limits<int32_t>::min(),
       std::numeric_limits<int32_t>::max()},
      {IndexedDType::int64, 5, 8, std::numeric_limits<int64_t>::min(),
       std::numeric_limits<int64_t>::max()},
      {IndexedDType::float64, 6, 8, -(int64_t{1} << 53), int64_t{1} << 53},
      {IndexedDType::float32, 7, 4, -(int64_t{1} << 24), int64_t{1} << 24},
      {IndexedDType::uint16, 8, 2, 0, 65535},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(indexed_dtype_name(c.dtype)));
    EXPECT_EQ(static_cast<int>(c.dtype), c.code);
    EXPECT_EQ(indexed_dtype_from_code(c.code), c.dtype);
    EXPECT_EQ(indexed_dtype_size(c.dtype), c.size);
    // Empty sequences first, between and last; an empty document; the extremes.
    const Sequences sequences = {{}, {c.low, c.high, 0, 1}, {}, {7}, {c.high, 5, c.low}, {}};
    const std::string prefix = path(std::string(indexed_dtype_name(c.dtype)));
    write_dataset(prefix, c.dtype, sequences, {2, 2, 4, 6});
    EXPECT_EQ(static_cast<int64_t>(read_bytes(prefix + ".bin").size()), 8 * c.size);
    const IndexedDataset dataset(prefix);
    EXPECT_EQ(dataset.dtype(), c.dtype);
    EXPECT_EQ(read_all(dataset), sequences);
    EXPECT_EQ(
        std::vector<int64_t>(dataset.document_indices().begin(), dataset.document_indices().end()),
        (std::vector<int64_t>{0, 2, 2, 4, 6}));
    EXPECT_EQ(
        std::vector<int32_t>(dataset.sequence_lengths().begin(), dataset.sequence_lengths().end()),
        (std::vector<int32_t>{0, 4, 0, 1, 3, 0}));
    EXPECT_EQ(std::vector<int64_t>(dataset.sequence_pointers().begin(),
                                   dataset.sequence_pointers().end()),
              (std::vector<int64_t>{0, 0, 4 * c.size, 4 * c.size, 5 * c.size, 8 * c.size}));
    int64_t middle[2] = {-1, -1};
    dataset.read(1, 1, 2, middle);  // a window inside a sequence
    EXPECT_EQ(middle[0], c.high);
    EXPECT_EQ(middle[1], 0);
  }
  EXPECT_EQ(indexed_dtype_from_code(0), std::nullopt);
  EXPECT_EQ(indexed_dtype_from_code(9), std::nullopt);
}

TEST_F(IndexedDatasetTest, EmptyDatasetRoundTrips) {
  const std::string prefix = path("empty");
  write_dataset(prefix, IndexedDType::int32, {}, {});
  EXPECT_EQ(read_bytes(prefix + ".bin"), "");
  const IndexedDataset dataset(prefix);
  EXPECT_EQ(dataset.num_sequences(), 0);
  EXPECT_EQ(dataset.num_documents(), 0);
  EXPECT_EQ(dataset.num_tokens(), 0);
  expect_error([&] { (void)dataset.sequence(0); }, {prefix, "sequence 0 out of range"});
}

TEST_F(IndexedDatasetTest, UnfinishedDocumentIsClosedByFinalize) {
  const std::string prefix = path("open");
  IndexedDatasetWriter writer(prefix, IndexedDType::uint8);
  writer.add_sequence(std::vector<int64_t>{1});
  writer.end_document();
  writer.add_sequence(std::vector<int64_t>{2, 3});
  writer.finalize();
  const IndexedDataset dataset(prefix);
  EXPECT_EQ(dataset.num_documents(), 2);
  EXPECT_EQ(dataset.document_indices().back(), 2);
  expect_error([&] { writer.end_document(); }, {prefix, "already finalized"});
}

TEST_F(IndexedDatasetTest, NothingIsWrittenWithoutFinalize) {
  {
    IndexedDatasetWriter writer(path("never"), IndexedDType::uint16);
    writer.add_sequence(std::vector<int64_t>(5000, 3));
    writer.end_document();
    EXPECT_FALSE(fs::exists(path("never.bin")));  // only a hidden temporary so far
  }
  EXPECT_TRUE(listing().empty());
}

TEST_F(IndexedDatasetTest, RefusesTokensTheDtypeCannotHold) {
  const std::vector<std::pair<IndexedDType, int64_t>> bad = {
      {IndexedDType::uint8, 256},
      {IndexedDType::uint8, -1},
      {IndexedDType::int8, 128},
      {IndexedDType::uint16, 65536},
      {IndexedDType::uint16, -1},
      {IndexedDType::int16, -32769},
      {IndexedDType::int32, int64_t{1} << 31},
      {IndexedDType::float32, (int64_t{1} << 24) + 1},
      {IndexedDType::float64, (int64_t{1} << 53) + 1}};
  for (const auto& [dtype, token] : bad) {
    SCOPED_TRACE(std::string(indexed_dtype_name(dtype)) + " " + std::to_string(token));
    IndexedDatasetWriter writer(path("bad"), dtype);
    expect_error(
        [&] {
          writer.add_sequence(std::vector<int64_t>{1, token});
        },
        {path("bad.bin"), std::to_string(token), "position 1",
         std::string(indexed_dtype_name(dtype))});
  }
}

TEST(IndexedDType, OptimalDtypeFollowsMegatron) {
  EXPECT_EQ(optimal_indexed_dtype(257), IndexedDType::uint16);
  EXPECT_EQ(optimal_indexed_dtype(65499), IndexedDType::uint16);
  EXPECT_EQ(optimal_indexed_dtype(65500), IndexedDType::int32);
  EXPECT_EQ(optimal_indexed_dtype(151936), IndexedDType::int32);
  EXPECT_EQ(optimal_indexed_dtype(std::nullopt), IndexedDType::int32);
}

TEST_F(IndexedDatasetTest, ReadOutOfRangeIsAnError) {
  const std::string prefix = path("r");
  write_dataset(prefix, IndexedDType::int16, {{1, 2, 3}}, {1});
  const IndexedDataset dataset(prefix);
  int64_t out[4];
  expect_error([&] { dataset.read(1, 0, 1, out); }, {prefix, "sequence 1 out of range"});
  expect_error([&] { dataset.read(-1, 0, 1, out); }, {prefix, "sequence -1"});
  expect_error([&] { dataset.read(0, 2, 2, out); }, {prefix, "[2, 4)", "3 tokens"});
  expect_error([&] { dataset.read(0, -1, 1, out); }, {prefix, "out of range"});
  dataset.read(0, 3, 0, out);  // an empty window at the end is fine
}

// Damaged files: a valid dataset, then one field or length changed at a time.
class DamagedIndexedDataset : public ScratchFolder {
 protected:
  void SetUp() override {
    ScratchFolder::SetUp();
    prefix_ = path("d");
    write_dataset(prefix_, IndexedDType::int32, {{1, 2}, {3}, {4, 5, 6}}, {1, 3});
    idx_ = read_bytes(prefix_ + ".idx");
    bin_ = read_bytes(prefix_ + ".bin");
  }
  // The .idx with `bytes` written at `offset`.
  void patch_idx(size_t offset, const std::string& bytes) {
    std::string idx = idx_;
    idx.replace(offset, bytes.size(), bytes);
    write_bytes(prefix_ + ".idx", idx);
  }
  void expect_open_error(const std::string& file, const std::string& cause) {
    expect_error([&] { IndexedDataset dataset(prefix_); }, {file, cause});
  }
  std::string idx_path() const { return prefix_ + ".idx"; }
  std::string bin_path() const { return prefix_ + ".bin"; }

  std::string prefix_, idx_, bin_;
  // Offsets in this dataset's .idx: 3 sequences, 3 document entries.
  static constexpr size_t kLengths = 34, kPointers = 34 + 12, kDocuments = 34 + 36;
};

TEST_F(DamagedIndexedDataset, MissingFiles) {
  fs::remove(bin_path());
  expect_open_error(bin_path(), "cannot open");
  fs::remove(idx_path());
  expect_open_error(idx_path(), "cannot open");
}

TEST_F(DamagedIndexedDataset, WrongMagic) {
  patch_idx(0, "MMIDIDY");
  expect_open_error(idx_path(), "not a Megatron indexed dataset index");
  write_bytes(idx_path(), "{\"not\": \"an index at all\"}");
  expect_open_error(idx_path(), "not a Megatron indexed dataset index");
}

TEST_F(DamagedIndexedDataset, WrongVersion) {
  patch_idx(9, le_u64(2));
  expect_open_error(idx_path(), "index version 2");
}

TEST_F(DamagedIndexedDataset, UnknownDtypeCode) {
  patch_idx(17, le(9, 1));
  expect_open_error(idx_path(), "unknown dtype code 9");
  patch_idx(17, le(0, 1));
  expect_open_error(idx_path(), "unknown dtype code 0");
}

TEST_F(DamagedIndexedDataset, EveryTruncationOfTheIndexIsAnError) {
  for (size_t size = 0; size < idx_.size(); ++size) {
    SCOPED_TRACE(size);
    write_bytes(idx_path(), idx_.substr(0, size));
    expect_error([&] { IndexedDataset dataset(prefix_); }, {idx_path()});
  }
  write_bytes(idx_path(), idx_.substr(0, 20));
  expect_open_error(idx_path(), "truncated");
  write_bytes(idx_path(), idx_.substr(0, idx_.size() - 1));
  expect_open_error(idx_path(), "truncated or corrupt");
}

TEST_F(DamagedIndexedDataset, CountsLargerThanTheFile) {
  patch_idx(18, le_u64(~uint64_t{0}));  // overflow bait: 12 S wraps around
  expect_open_error(idx_path(), "more than its");
  patch_idx(18, le_u64(0));
  patch_idx(26, le_u64(uint64_t{1} << 61));
  expect_open_error(idx_path(), "more than its");
}

TEST_F(DamagedIndexedDataset, EveryTruncationOfTheDataIsAnError) {
  for (size_t size = 0; size < bin_.size(); ++size) {
    SCOPED_TRACE(size);
    write_bytes(bin_path(), bin_.substr(0, size));
    expect_open_error(bin_path(), "too short");
  }
  write_bytes(bin_path(), bin_ + "extra");  // longer than needed is accepted
  EXPECT_EQ(read_all(IndexedDataset(prefix_)), (Sequences{{1, 2}, {3}, {4, 5, 6}}));
}

TEST_F(DamagedIndexedDataset, MultimodalIsRefusedClearly) {
  write_bytes(idx_path(), idx_ + std::string(3, '\0'));  // a mode per sequence
  expect_open_error(idx_path(), "multimodal");
}

TEST_F(DamagedIndexedDataset, BadLengthsAndPointers) {
  patch_idx(kLengths + 4, le(~uint64_t{0}, 4));  // sequence 1 of length -1
  expect_open_error(idx_path(), "negative length -1");
  patch_idx(kLengths + 4, le(1, 4));
  patch_idx(kPointers + 16, le_u64(4));  // sequence 2 starts before sequence 1 (at 8)
  expect_open_error(idx_path(), "non-decreasing");
  patch_idx(kPointers + 16, le_u64(1000));
  expect_open_error(bin_path(), "too short");
  patch_idx(kPointers + 16, le_u64(~uint64_t{0}));
  expect_open_error(idx_path(), "negative pointer");
}

TEST_F(DamagedIndexedDataset, BadDocumentIndices) {
  patch_idx(kDocuments, le_u64(1));
  expect_open_error(idx_path(), "must start at 0");
  patch_idx(kDocuments, le_u64(0));
  patch_idx(kDocuments + 8, le_u64(4));
  expect_open_error(idx_path(), "non-decreasing");
  patch_idx(kDocuments + 8, le_u64(1));
  patch_idx(kDocuments + 16, le_u64(2));
  expect_open_error(idx_path(), "last document index is 2 but there are 3 sequences");
}

TEST_F(IndexedDatasetTest, MergeConcatenatesDocuments) {
  write_dataset(path("a"), IndexedDType::uint16, {{1, 2}, {}, {3}}, {2, 3});
  write_dataset(path("b"), IndexedDType::uint16, {{4}, {5, 6}}, {0, 2});  // an empty document
  merge_indexed_datasets({path("a"), path("b")}, path("ab"));
  const IndexedDataset merged(path("ab"));
  EXPECT_EQ(read_all(merged), (Sequences{{1, 2}, {}, {3}, {4}, {5, 6}}));
  EXPECT_EQ(
      std::vector<int64_t>(merged.document_indices().begin(), merged.document_indices().end()),
      (std::vector<int64_t>{0, 2, 3, 3, 5}));
  // The same bytes as writing the sequences in one go.
  write_dataset(path("direct"), IndexedDType::uint16, {{1, 2}, {}, {3}, {4}, {5, 6}}, {2, 3, 3, 5});
  EXPECT_EQ(read_bytes(path("ab.idx")), read_bytes(path("direct.idx")));
  EXPECT_EQ(read_bytes(path("ab.bin")), read_bytes(path("direct.bin")));

  write_dataset(path("c"), IndexedDType::int32, {{7}}, {1});
  expect_error(
      [&] {
        merge_indexed_datasets({path("a"), path("c")}, path("ac"));
      },
      {path("c"), "int32", "uint16"});
  EXPECT_FALSE(fs::exists(path("ac.bin")));
}

// --- moe preprocess ---------------------------------------------------------------------------

class Preprocess : public ScratchFolder {
 protected:
  PreprocessSummary run(const std::string& input, const std::string& output, int workers,
                        bool append_eod = true, std::vector<std::string> keys = {"text"}) {
    PreprocessOptions options;
    options.inputs = {input};
    options.output_prefix = output;
    options.append_eod = append_eod;
    options.workers = workers;
    options.json_keys = std::move(keys);
    return preprocess(options, ByteLevelTokenizer(), nullptr);
  }
};

std::vector<int64_t> bytes_of(const std::string& text, bool eod) {
  std::vector<int64_t> ids(text.begin(), text.end());
  for (int64_t& id : ids) id = static_cast<unsigned char>(id);
  if (eod && !ids.empty()) ids.push_back(256);
  return ids;
}

TEST_F(Preprocess, JsonlGivesTheSameFilesForAnyNumberOfWorkers) {
  // Enough lines for several batches (256 lines each), of varied lengths; an empty text,
  // non-ASCII text, escapes, a pre-split list of sentences and extra keys.
  std::vector<std::string> texts;
  std::string jsonl;
  for (int i = 0; i < 1100; ++i) {
    std::string text = "doc " + std::to_string(i) + std::string(static_cast<size_t>(i % 37), 'x');
    if (i == 5) text = "";
    if (i == 6) text = "caf\xC3\xA9 \"quoted\"\ttab\nnew line";
    texts.push_back(text);
    jsonl += nlohmann::json{{"text", text}, {"id", i}}.dump() + "\n";
    if (i == 10) jsonl += "   \n";  // a blank line is skipped
  }
  jsonl += R"({"text": ["ab", "", "c"], "meta": 1})";  // no final newline
  write_bytes(path("in.jsonl"), jsonl);

  const PreprocessSummary one = run(path("in.jsonl"), path("out1/corpus"), 1);
  const PreprocessSummary three = run(path("in.jsonl"), path("out3/corpus"), 3);
  ASSERT_EQ(one.output_prefixes, std::vector<std::string>{path("out1/corpus_text_document")});
  EXPECT_EQ(one.documents, 1101);
  EXPECT_EQ(one.dtype, IndexedDType::uint16);  // 257 ids < 65500
  EXPECT_EQ(one.tokens, three.tokens);
  for (const char* ext : {".bin", ".idx"}) {
    EXPECT_EQ(read_bytes(path("out1/corpus_text_document") + ext),
              read_bytes(path("out3/corpus_text_document") + ext))
        << ext;
  }

  const IndexedDataset dataset(path("out3/corpus_text_document"));
  // Megatron's encoding: one sequence per document with <eod> (256) appended, none for the
  // empty text (a document without sequences), and the list's non-empty sentences as
  // sequences, <eod> on the last.
  ASSERT_EQ(dataset.num_documents(), 1101);
  ASSERT_EQ(dataset.num_sequences(), 1100 - 1 + 2);
  int64_t sequence = 0;
  for (int i = 0; i < 1100; ++i) {
    SCOPED_TRACE(i);
    const int64_t first = dataset.document_indices()[static_cast<size_t>(i)];
    ASSERT_EQ(first, sequence);
    if (texts[static_cast<size_t>(i)].empty()) {
      EXPECT_EQ(dataset.document_indices()[static_cast<size_t>(i) + 1], first);
      continue;
    }
    EXPECT_EQ(dataset.sequence(sequence++), bytes_of(texts[static_cast<size_t>(i)], true));
  }
  EXPECT_EQ(dataset.sequence(sequence), bytes_of("ab", false));
  EXPECT_EQ(dataset.sequence(sequence + 1), bytes_of("c", true));
  EXPECT_EQ(one.tokens, dataset.num_tokens());
}

TEST_F(Preprocess, WithoutAppendEodAndSeveralKeys) {
  write_bytes(path("in.json"),
              "{\"text\": \"hi\", \"title\": \"T\"}\n{\"text\": \"yo\", \"title\": \"\"}\n");
  const PreprocessSummary s = run(path("in.json"), path("k"), 2, false, {"text", "title"});
  ASSERT_EQ(s.output_prefixes.size(), 2u);
  const IndexedDataset text(path("k_text_document"));
  const IndexedDataset title(path("k_title_document"));
  EXPECT_EQ(read_all(text), (Sequences{bytes_of("hi", false), bytes_of("yo", false)}));
  EXPECT_EQ(read_all(title), (Sequences{bytes_of("T", false)}));
  EXPECT_EQ(title.num_documents(), 2);
}

TEST_F(Preprocess, PlainTextIsOneDocumentPerLine) {
  write_bytes(path("in.txt"), "first line\r\n\nsecond\nthird");
  run(path("in.txt"), path("t"), 2);
  const IndexedDataset dataset(path("t_text_document"));
  EXPECT_EQ(read_all(dataset), (Sequences{bytes_of("first line", true), bytes_of("second", true),
                                          bytes_of("third", true)}));
}

TEST_F(Preprocess, BadInputNamesTheFileAndLine) {
  std::string jsonl;
  for (int i = 0; i < 600; ++i) jsonl += "{\"text\": \"fine\"}\n";
  write_bytes(path("broken.jsonl"), jsonl + "{\"text\": \"cut\n");
  expect_error([&] { run(path("broken.jsonl"), path("o"), 3); },
               {path("broken.jsonl") + ":601", "not valid JSON"});
  write_bytes(path("nokey.jsonl"), "{\"text\": \"a\"}\n{\"body\": \"b\"}\n");
  expect_error([&] { run(path("nokey.jsonl"), path("o"), 1); },
               {path("nokey.jsonl") + ":2", "no key 'text'"});
  write_bytes(path("number.jsonl"), "{\"text\": 3}\n");
  expect_error([&] { run(path("number.jsonl"), path("o"), 1); }, {":1", "string"});
  write_bytes(path("list.jsonl"), "[1, 2]\n");
  expect_error([&] { run(path("list.jsonl"), path("o"), 1); }, {":1", "JSON object"});
  expect_error([&] { run(path("missing.jsonl"), path("o"), 1); },
               {path("missing.jsonl"), "cannot open"});
  write_bytes(path("in.txt"), "a\n");
  expect_error([&] { run(path("in.txt"), path("o"), 1, true, {"body"}); }, {"--json-keys"});
  expect_error([&] { run(path("in.txt"), path("o"), 0); }, {"--workers"});
  // Nothing, not even a temporary, was left behind by the failures: only the inputs.
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const std::string ext = entry.path().extension().string();
    EXPECT_TRUE(ext == ".jsonl" || ext == ".txt") << entry.path();
  }
}

// Driven by tests/data/check_indexed_with_python.py, which sets MOE_INDEXED_PY_DIR holding
//   spec.json              {"datasets": [{"name", "dtype_code", "sequences", "document_indices"}]}
//   python_<name>.bin/.idx  written by the script's numpy writer from the spec
//   input.jsonl            for preprocess
// Here: every python_<name> must read back as its spec, the same sequences are written as
// moecore_<name> (the script compares the bytes), and input.jsonl is preprocessed into
// moecore_corpus_text_document (byte tokenizer, --append-eod, 3 workers) for the script to read.
TEST(IndexedDatasetPython, ReadsAndWritesWhatNumpyDoes) {
  const char* dir = std::getenv("MOE_INDEXED_PY_DIR");
  if (dir == nullptr) GTEST_SKIP() << "set by tests/data/check_indexed_with_python.py";
  const std::string folder = dir;
  const nlohmann::json spec = nlohmann::json::parse(read_bytes(folder + "/spec.json"));
  for (const nlohmann::json& d : spec.at("datasets")) {
    const std::string name = d.at("name");
    SCOPED_TRACE(name);
    const auto sequences = d.at("sequences").get<Sequences>();
    const auto documents = d.at("document_indices").get<std::vector<int64_t>>();
    const IndexedDataset python(folder + "/python_" + name);
    EXPECT_EQ(static_cast<int>(python.dtype()), d.at("dtype_code").get<int>());
    EXPECT_EQ(read_all(python), sequences);
    EXPECT_EQ(
        std::vector<int64_t>(python.document_indices().begin(), python.document_indices().end()),
        documents);
    write_dataset(folder + "/moecore_" + name, python.dtype(), sequences,
                  std::vector<int64_t>(documents.begin() + 1, documents.end()));
  }
  PreprocessOptions options;
  options.inputs = {folder + "/input.jsonl"};
  options.output_prefix = folder + "/moecore_corpus";
  options.append_eod = true;
  options.workers = 3;
  preprocess(options, ByteLevelTokenizer(), nullptr);
}

}  // namespace
}  // namespace moe::data
