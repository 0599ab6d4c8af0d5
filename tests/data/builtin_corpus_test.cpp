// The default run's corpus: fortune files cut at their '%' lines into documents, byte tokens
// with the end-of-document id, the package's layout (indexes and links skipped), the 99/1
// split, and the real package (installed by scripts/setup.sh: this test fails when it is not).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "moe/core/error.h"
#include "moe/data/builtin_corpus.h"
#include "moe/data/byte_tokenizer.h"

namespace moe::data {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("moe_corpus_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(BuiltinCorpus, SplitsEntriesAtPercentLines) {
  const std::string text =
      "A day for firm decisions!!!!!  Or is it?\n%\n"
      "A long-forgotten loved one will appear soon.\n\nBuy the negatives at any price.\n%\n"
      "\n%\n"                                  // an empty entry is dropped
      "100% sure: a % inside a line stays.  \n\n%\n"
      "The last entry has no final %\n";
  const std::vector<std::string> docs = split_fortune_text(text);
  ASSERT_EQ(docs.size(), 4u);
  EXPECT_EQ(docs[0], "A day for firm decisions!!!!!  Or is it?");
  EXPECT_EQ(docs[1], "A long-forgotten loved one will appear soon.\n\nBuy the negatives at any price.");
  EXPECT_EQ(docs[2], "100% sure: a % inside a line stays.");
  EXPECT_EQ(docs[3], "The last entry has no final %");
  EXPECT_TRUE(split_fortune_text("").empty());
  EXPECT_TRUE(split_fortune_text("%\n%\n").empty());
}

TEST(BuiltinCorpus, DocumentsAreBytesThenEndOfDocument) {
  std::vector<int32_t> out = {7};
  append_document_tokens("Hi \xc3\xa9", out);  // UTF-8 'é' stays two bytes
  EXPECT_EQ(out, (std::vector<int32_t>{7, 'H', 'i', ' ', 0xc3, 0xa9, 256}));
}

TEST(BuiltinCorpus, FollowsThePackageLayout) {
  const fs::path dir = fresh_dir("layout");
  std::ofstream(dir / "b-topic") << "two\n%\nthree\n";
  std::ofstream(dir / "a-topic") << "one\n";
  std::ofstream(dir / "a-topic.dat") << "\x01\x02 binary index";
  fs::create_symlink("a-topic", dir / "a-topic.u8");
  fs::create_directories(dir / "off");
  std::ofstream(dir / "off" / "rot13") << "bssrafvir\n";
  const std::vector<std::string> files = fortune_files(dir.string());
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(fs::path(files[0]).filename(), "a-topic");
  EXPECT_EQ(fs::path(files[1]).filename(), "b-topic");
}

TEST(BuiltinCorpus, EveryHundredthDocumentIsValidation) {
  const fs::path dir = fresh_dir("split");
  {
    std::ofstream f(dir / "numbers");
    for (int i = 0; i < 250; ++i) f << "doc " << i << "\n%\n";
  }
  const BuiltinCorpus c = load_builtin_corpus(dir.string());
  EXPECT_EQ(c.files, 1);
  EXPECT_EQ(c.train_documents, 248);
  EXPECT_EQ(c.valid_documents, 2);  // documents 99 and 199
  std::vector<int32_t> expected_valid;
  append_document_tokens("doc 99", expected_valid);
  append_document_tokens("doc 199", expected_valid);
  EXPECT_EQ(c.valid, expected_valid);
  EXPECT_EQ(std::count(c.train.begin(), c.train.end(), 256), 248);
}

TEST(BuiltinCorpus, MissingPackageNamesIt) {
  try {
    load_builtin_corpus("/nonexistent/fortunes");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("/nonexistent/fortunes"), std::string::npos) << m;
    EXPECT_NE(m.find("apt-get install fortunes"), std::string::npos) << m;
  }
  const fs::path empty = fresh_dir("empty");
  EXPECT_THROW(load_builtin_corpus(empty.string()), Error);
}

// The real corpus: scripts/setup.sh installs Debian's `fortunes`; without it this fails.
TEST(BuiltinCorpus, TheInstalledFortunesPackage) {
  ASSERT_TRUE(fs::is_directory(kFortunesDir))
      << kFortunesDir << " is missing: run scripts/setup.sh (apt-get install fortunes)";
  const BuiltinCorpus c = load_builtin_corpus();
  EXPECT_GE(c.files, 20);
  EXPECT_GE(c.train_documents, 5000);
  // 99 / 1, to within one document.
  const int64_t total = c.train_documents + c.valid_documents;
  EXPECT_EQ(c.valid_documents, total / 100);
  EXPECT_GE(c.train.size(), 1000000u);  // ~2 MB of text
  EXPECT_EQ(std::count(c.train.begin(), c.train.end(), ByteTokenizer::kEndOfDocument), c.train_documents);
  EXPECT_EQ(std::count(c.valid.begin(), c.valid.end(), ByteTokenizer::kEndOfDocument), c.valid_documents);
  for (const std::vector<int32_t>* split : {&c.train, &c.valid})
    for (int32_t id : *split) ASSERT_TRUE(id >= 0 && id < ByteTokenizer::kVocabSize) << id;
  // English text: spaces and 'e' are among the most frequent bytes, and no '%' separator line
  // survives ("\n%\n" never appears).
  const int64_t spaces = std::count(c.train.begin(), c.train.end(), ' ');
  EXPECT_GT(spaces, static_cast<int64_t>(c.train.size() / 12));
  const std::vector<int32_t> separator = {'\n', '%', '\n'};
  EXPECT_EQ(std::search(c.train.begin(), c.train.end(), separator.begin(), separator.end()), c.train.end());
  // Deterministic.
  const BuiltinCorpus again = load_builtin_corpus();
  EXPECT_EQ(again.train, c.train);
  EXPECT_EQ(again.valid, c.valid);
}

}  // namespace
}  // namespace moe::data
