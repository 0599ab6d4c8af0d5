#include "moe/data/builtin_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "moe/core/error.h"
#include "moe/data/byte_tokenizer.h"

namespace moe::data {
namespace {

namespace fs = std::filesystem;

const char* const kInstallHint =
    "the default run's text comes from Debian's `fortunes` package: install it with "
    "`sudo apt-get install fortunes` (scripts/setup.sh does), or give --data-path";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Trailing whitespace (the blank line before a '%', a final newline) is not part of an entry.
std::string trim_end(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
    s.pop_back();
  return s;
}

}  // namespace

std::vector<std::string> split_fortune_text(const std::string& text) {
  std::vector<std::string> documents;
  std::string current;
  std::istringstream in(text);
  std::string line;
  auto finish = [&] {
    std::string doc = trim_end(std::move(current));
    current.clear();
    // Leading blank lines are layout too.
    const size_t first = doc.find_first_not_of("\r\n");
    if (first != std::string::npos) documents.push_back(doc.substr(first));
  };
  while (std::getline(in, line)) {
    if (line == "%" || line == "%\r") {
      finish();
    } else {
      current += line;
      current += '\n';
    }
  }
  finish();
  return documents;
}

std::vector<std::string> fortune_files(const std::string& dir) {
  std::error_code ec;
  MOE_CHECK(fs::is_directory(dir, ec), "built-in corpus: ", dir, " does not exist; ", kInstallHint);
  std::vector<std::string> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_symlink() || !entry.is_regular_file()) continue;  // .u8 links, subfolders
    if (ends_with(name, ".dat") || ends_with(name, ".u8") || name.front() == '.') continue;
    files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void append_document_tokens(const std::string& document, std::vector<int32_t>& out) {
  const std::vector<int64_t> ids = ByteTokenizer::encode_document(document);
  out.insert(out.end(), ids.begin(), ids.end());  // ids < 257 fit int32
}

BuiltinCorpus load_builtin_corpus(const std::string& dir) {
  BuiltinCorpus corpus;
  corpus.source = dir;
  int64_t index = 0;
  for (const std::string& path : fortune_files(dir)) {
    std::ifstream in(path, std::ios::binary);
    MOE_CHECK(in.good(), "built-in corpus: cannot read ", path);
    std::ostringstream text;
    text << in.rdbuf();
    ++corpus.files;
    for (const std::string& doc : split_fortune_text(text.str())) {
      const bool valid = index % 100 == 99;
      append_document_tokens(doc, valid ? corpus.valid : corpus.train);
      ++(valid ? corpus.valid_documents : corpus.train_documents);
      ++index;
    }
  }
  MOE_CHECK(corpus.valid_documents > 0, "built-in corpus: ", dir, " holds ", index,
            " fortunes in ", corpus.files, " files, too few for a 99/1 split; ", kInstallHint);
  return corpus;
}

}  // namespace moe::data
