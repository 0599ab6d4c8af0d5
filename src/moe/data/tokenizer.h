// The tokenizer interface the data pipeline (`moe preprocess`, `moe train --data-path`,
// `moe generate`) programs against, and the factory that makes one from Megatron's flags.
//
// Implementations: ByteLevelTokenizer below (the default run's byte tokens, byte_tokenizer.h),
// the Hugging Face BPE tokenizer read from a `tokenizer.json` (hf_bpe_tokenizer.h: byte-level
// and SentencePiece-kind files) and Megatron's SentencePiece tokenizers over a `tokenizer.model`
// (sentencepiece_tokenizer.h). encode() and decode() are const and safe to call from several
// threads at once (`moe preprocess` encodes with worker threads).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moe::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // The ids of `text` (no end-of-document id appended; special-token strings in the text are
  // matched as the implementation's format says).
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  // The ids Megatron's preprocessing stores for one document: Hugging Face tokenizers add their
  // post-processor's special tokens (Llama-3's <|begin_of_text|>), as transformers'
  // tokenizer(text) does in Megatron's HuggingFaceTokenizer; byte tokens add nothing.
  virtual std::vector<int64_t> encode_document(std::string_view text) const { return encode(text); }
  // The text of `ids`. An id outside the vocabulary is an error naming it and its position.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // Ids the tokenizer can produce: 0 .. vocab_size() - 1 (before Megatron's padding).
  virtual int64_t vocab_size() const = 0;
  // The id `--append-eod` appends after each document (Megatron's tokenizer.eod), if any.
  virtual std::optional<int64_t> end_of_document() const = 0;
  // For messages and metadata: "byte", "HuggingFaceTokenizer(<path>)", ...
  virtual std::string description() const = 0;
};

// The byte-level tokenizer (byte_tokenizer.h) behind the interface.
class ByteLevelTokenizer final : public Tokenizer {
 public:
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override;
  std::optional<int64_t> end_of_document() const override;
  std::string description() const override { return "byte"; }
};

// Megatron's --tokenizer-type / --tokenizer-model:
//   "byte" (or empty type and empty model)            -> ByteLevelTokenizer
//   "HuggingFaceTokenizer" (or empty type) + a path   -> the tokenizer.json at the path (a file,
//                                                       or a folder holding tokenizer.json)
//   "SentencePieceTokenizer", "Llama2Tokenizer"       -> the tokenizer.model at the path (a file
//                                                       or a folder; sentencepiece_tokenizer.h)
// Any other type is refused with a message naming it and the types this build has.
inline constexpr const char* kTokenizerTypes =
    "byte, HuggingFaceTokenizer, SentencePieceTokenizer, Llama2Tokenizer";
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& tokenizer_type,
                                          const std::string& tokenizer_model);

}  // namespace moe::data
