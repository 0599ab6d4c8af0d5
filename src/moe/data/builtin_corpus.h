// The built-in corpus of `moe train`'s default run: the English text of Debian's `fortunes`
// package (the quotations, jokes and poems that fortune(6) prints), so a fresh machine can train
// without any data given. Installed by scripts/setup.sh (`apt-get install fortunes`).
//
// The package's layout (strfile(1)): /usr/share/games/fortunes/<topic> is a plain text file of
// entries separated by lines holding a single '%'; <topic>.dat is strfile's binary index and
// <topic>.u8 a symbolic link to <topic> (the UTF-8 name); subfolders hold other packages' sets
// (e.g. off/ of fortunes-off). The corpus reads the top-level plain text files only, in name
// order, and skips the .dat indexes, the .u8 links and everything that is not a regular file.
//
// Documents: each entry with its trailing blank lines and spaces removed; empty entries are
// dropped. Tokens are data/byte_tokenizer.h's: bytes (ids 0..255, UTF-8 kept as its bytes),
// every document followed by the end-of-document id 256 (a vocabulary of 257 ids). Split: document i (in reading
// order, counting from 0) is validation when i % 100 == 99, training otherwise (99 / 1, the
// same on every machine, spread over every topic).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::data {

inline constexpr const char* kFortunesDir = "/usr/share/games/fortunes";

struct BuiltinCorpus {
  std::vector<int32_t> train;  // training documents' tokens, concatenated
  std::vector<int32_t> valid;  // validation documents' tokens, concatenated
  int64_t train_documents = 0;
  int64_t valid_documents = 0;
  int64_t files = 0;           // topic files read
  std::string source;          // the folder read
};

// One fortune file's text -> its documents (the '%' separator lines removed, entries trimmed
// at the end, empty ones dropped). A file without a final '%' ends with its last entry.
std::vector<std::string> split_fortune_text(const std::string& text);

// The topic files of a fortunes folder, in name order (the layout above).
std::vector<std::string> fortune_files(const std::string& dir = kFortunesDir);

// ByteTokenizer::encode_document(document) appended to `out`.
void append_document_tokens(const std::string& document, std::vector<int32_t>& out);

// Reads the whole corpus. Throws moe::Error naming the Debian package to install when the
// folder or its files are missing or hold no document.
BuiltinCorpus load_builtin_corpus(const std::string& dir = kFortunesDir);

}  // namespace moe::data
