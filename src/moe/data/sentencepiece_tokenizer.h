// Megatron's SentencePiece tokenizers over a `tokenizer.model` file (Llama-2, Mixtral), read and
// run by Debian's SentencePiece library (sentencepiece::SentencePieceProcessor), so the ids are
// those of Python's `sentencepiece` that Megatron calls.
//
// Two of Megatron's --tokenizer-type values (megatron/training/tokenizer/tokenizer.py):
//   Llama2Tokenizer         vocabulary: the model's pieces. Megatron's tokenize(text) is
//                           [bos] + encode(text) (its bos=True default), which encode_document
//                           gives (what `moe preprocess` stores); encode(text) is encode(text)
//                           alone. eod = the model's eos id; detokenize = decode(ids).
//   SentencePieceTokenizer  vocabulary: the pieces, then the special tokens <CLS>, <SEP>, <EOD>,
//                           <MASK> and the pad / bos / eos pieces (<PAD>, <BOS>, <EOS> when the
//                           model has none), each taking the piece's id when the model has it,
//                           else the next free id. tokenize(text) finds those tokens' texts in
//                           the text (the earliest first; on a tie the first of that order), and
//                           encodes the stretches between them on their own; eod = <EOD>.
//                           detokenize: each special id becomes " <its text> " after the decoded
//                           text before it. (Megatron's --vocab-extra-ids is not a flag here: 0.)
// Pad / bos / eos ids: the model's (-1 when it has none), as Megatron reads them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/data/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moe::data {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  enum class Kind { kSentencePiece, kLlama2 };

  // `path`: a tokenizer.model file, or a folder holding one. A missing or unreadable file is an
  // error naming it and the library's message.
  SentencePieceTokenizer(const std::string& path, Kind kind);
  ~SentencePieceTokenizer() override;

  std::vector<int64_t> encode(std::string_view text) const override;
  std::vector<int64_t> encode_document(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_size_); }
  std::optional<int64_t> end_of_document() const override { return eod_; }
  std::string description() const override;

  int64_t bos() const { return bos_; }
  int64_t eos() const { return eos_; }
  int64_t pad() const { return pad_; }
  // The special tokens of SentencePieceTokenizer, in Megatron's order (none for Llama2).
  const std::vector<std::pair<std::string, int64_t>>& special_tokens() const { return special_; }

 private:
  void encode_plain(std::string_view text, std::vector<int64_t>& ids) const;
  std::string decode_plain(const std::vector<int64_t>& ids, size_t begin, size_t end) const;

  std::string path_;
  Kind kind_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  int pieces_ = 0;
  size_t vocab_size_ = 0;
  int64_t bos_ = -1, eos_ = -1, pad_ = -1;
  std::optional<int64_t> eod_;
  std::vector<std::pair<std::string, int64_t>> special_;  // text -> id
};

}  // namespace moe::data
