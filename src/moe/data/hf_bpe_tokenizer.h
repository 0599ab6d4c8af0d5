// A Hugging Face BPE tokenizer read from its `tokenizer.json`, giving the ids of the
// `tokenizers` library (0.23) for the byte-level styles of file (GPT-2, Llama-3, Qwen2 / Qwen3)
// and the SentencePiece kind (Llama-2, Mixtral, BPE with byte_fallback and Metaspace; below).
//
// encode(text), as tokenizers' Tokenizer.encode(text, add_special_tokens=False):
//   1. added tokens with normalized=false are found in the raw text: leftmost match first, the
//      longest where several start at one place; lstrip / rstrip take the whitespace (Unicode
//      White_Space) on their left / right into the token. They become their ids.
//   2. the normalizer (none, or NFC: Qwen) runs on each stretch between them; added tokens with
//      normalized=true are then found in the normalized stretches, matched by their normalized
//      text (GPT-2's <|endoftext|> is one; without a normalizer it makes no difference).
//   3. the pre-tokenizer (pretokenizer.h) cuts each remaining stretch into pieces:
//      ByteLevel (GPT-2: its own regex, optional prefix space) or
//      Sequence[Split(regex, Isolated), ..., ByteLevel(use_regex=false)] (Llama-3, Qwen).
//   4. the BPE model (bpe_model.h) turns each piece into ids.
// encode(text, true) also applies the post-processor's single-sequence template (Llama-3's
// TemplateProcessing puts <|begin_of_text|> first; GPT-2's and Qwen's ByteLevel processors
// change no id). decode(ids), as tokenizers' decode(ids, skip_special_tokens=False): each id's
// token (an added token's text first, else the vocabulary's), the ByteLevel decoder's mapping
// of characters back to bytes (a token with a character outside the mapping gives its own
// UTF-8 bytes), and invalid UTF-8 replaced by U+FFFD per maximal subpart.
//
// The SentencePiece kind: a vocabulary in plain UTF-8 with "▁" for spaces, no ByteLevel.
//   normalizer     null, or Prepend / Replace(String) / NFC, alone or in a Sequence (Llama-2's
//                  and Mixtral's Sequence[Prepend("▁"), Replace(" ", "▁")]); Prepend puts its
//                  text in front of a non-empty stretch (each stretch between added tokens)
//   pre_tokenizer  null (the whole stretch is one BPE word), or Metaspace (pretokenizer.h)
//   model          BPE over characters; byte_fallback: "<0xXX>" tokens for a character outside
//                  the vocabulary (bpe_model.h)
//   decoder        Replace / ByteFallback / Fuse / Strip / Metaspace, alone or in a Sequence
//                  (hf_decoder.h; Llama-2's Sequence[Replace("▁", " "), ByteFallback, Fuse,
//                  Strip(" ", 1, 0)]), run over the tokens of the ids.
//
// Anything else in a tokenizer.json — another model type, normalizer, pre-tokenizer,
// post-processor or decoder, Split behaviours other than Isolated, single_word added tokens,
// BPE dropout, byte_fallback with a byte-level vocabulary, Replace with a regex, subword
// prefixes / suffixes, truncation or padding — is refused with moe::Error naming the field and
// its value. Offsets (trim_offsets) do not affect ids.
//
// Text must be valid UTF-8 (a Python str always is); invalid bytes are an error naming their
// offset. encode and decode are const and thread-safe (bpe_model.h's sharded cache,
// thread-local regex state).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/data/hf_decoder.h"
#include "moe/data/tokenizer.h"

namespace moe::data {

class BpeModel;
class Pretokenizer;

struct HfAddedToken {
  int64_t id = 0;
  std::string content;
  bool lstrip = false, rstrip = false, normalized = false, special = false;
};

class HfBpeTokenizer final : public Tokenizer {
 public:
  // `path`: a tokenizer.json file, or a folder holding one. The end-of-document token is the
  // eos_token of the tokenizer_config.json (else special_tokens_map.json) beside it, as
  // transformers' AutoTokenizer reads it and Megatron's HuggingFaceTokenizer.eod returns
  // (tokenizer.eos_token_id); none when neither file names one.
  static std::unique_ptr<HfBpeTokenizer> from_file(const std::string& path);

  // From the text of a tokenizer.json; `source` names it in messages and description().
  HfBpeTokenizer(std::string_view json_text, std::string source,
                 std::optional<std::string> eos_token = std::nullopt);
  ~HfBpeTokenizer() override;

  std::vector<int64_t> encode(std::string_view text) const override;
  // add_special_tokens: apply the post-processor's template (tokenizers' default, and what
  // Megatron's HuggingFaceTokenizer.tokenize gets from transformers).
  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens) const;
  // encode(text, add_special_tokens = true): what Megatron's preprocessing stores.
  std::vector<int64_t> encode_document(std::string_view text) const override {
    return encode(text, true);
  }
  std::string decode(const std::vector<int64_t>& ids) const override;
  // skip_special_tokens: drop added tokens marked special.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;

  // Largest id + 1 over the vocabulary and the added tokens (transformers' len(tokenizer)).
  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<int64_t> end_of_document() const override { return eos_id_; }
  std::string description() const override { return "HuggingFaceTokenizer(" + source_ + ")"; }

  // The id of a token: an added token's text, else a vocabulary token (in GPT-2's mapped
  // characters, e.g. "Ġthe").
  std::optional<int64_t> token_to_id(std::string_view token) const;
  const std::vector<HfAddedToken>& added_tokens() const { return added_tokens_; }

 private:
  struct AddedTokenTrie;
  struct Segment {
    std::string_view text;
    int32_t added = -1;  // index into added_tokens_, or -1 for text
  };
  void split_added(std::string_view text, const AddedTokenTrie& trie,
                   std::vector<Segment>& out) const;
  void encode_normalized(std::string_view text, bool at_start, std::vector<int64_t>& ids) const;
  // The normalizer's text of `text` in `out`; false (out untouched) when it is `text` itself.
  bool normalize(std::string_view text, std::string& out) const;
  std::string normalized(std::string_view text) const;

  struct NormalizerStep {
    enum class Kind { kNfc, kPrepend, kReplace } kind;
    std::string text, replacement;  // Prepend: text; Replace: text -> replacement
  };

  std::string source_;
  std::vector<HfAddedToken> added_tokens_;
  std::unique_ptr<AddedTokenTrie> raw_trie_;         // added tokens with normalized=false
  std::unique_ptr<AddedTokenTrie> normalized_trie_;  // normalized=true, by normalized text
  std::vector<NormalizerStep> normalizer_;
  bool byte_level_ = true;  // a ByteLevel pre-tokenizer and decoder, else the SentencePiece kind
  std::unique_ptr<Pretokenizer> pretokenizer_;
  std::unique_ptr<BpeModel> model_;
  // The single-sequence template: ids before and after the sequence ($A).
  std::vector<int64_t> template_prefix_, template_suffix_;
  // id -> the bytes ByteLevel decodes it to; the SentencePiece kind: the token's text
  std::vector<std::string> decoded_bytes_;
  std::vector<HfDecoderStep> decoder_;  // the SentencePiece kind's decoder
  std::vector<uint8_t> id_kind_;        // id -> 0: none, 1: token, 2: special added token
  int64_t vocab_size_ = 0;
  std::optional<int64_t> eos_id_;
};

}  // namespace moe::data
