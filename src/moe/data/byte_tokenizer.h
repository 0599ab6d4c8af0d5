// The byte-level tokenizer of the default run: every byte of the UTF-8 text is one token,
//   id b in 0..255 for the byte b, and id 256 = end of document (Megatron's <eod>, appended
//   after each document so the model learns where texts end; generation stops there).
// The tokenizer's vocabulary is 257 ids; the model's embedding is padded like Megatron's
// _vocab_size_with_padding: round 257 up to a multiple of --make-vocab-size-divisible-by
// (default 128) x tensor-parallel size, so 384 by default. The padded ids 257.. are never
// produced by encode and are an error in decode (a sampler must mask them: generate.h's
// GenerateOptions::sampled_vocab_size).
// Text that is not valid UTF-8 still round-trips (the ids are bytes); decode of a cut
// sequence may end in the middle of a multi-byte character.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moe::data {

class ByteTokenizer {
 public:
  static constexpr int64_t kNumBytes = 256;
  static constexpr int64_t kEndOfDocument = 256;  // the <eod> id
  static constexpr int64_t kVocabSize = 257;      // bytes + <eod>, before padding
  // The largest padded vocabulary a byte-level model is taken to have: 257 rounded up to
  // Megatron's default 128 x a tensor-parallel size of up to 8.
  static constexpr int64_t kMaxPaddedVocabSize = 1024;

  // The bytes of `text`, one id each (no <eod>).
  static std::vector<int64_t> encode(std::string_view text);
  // encode(text) followed by <eod>: one training document.
  static std::vector<int64_t> encode_document(std::string_view text);
  // The bytes of `ids`; <eod> becomes `end_of_document_text` (empty: dropped). An id outside
  // 0..256 (a padding id, a negative id) is an error naming the id and its position.
  static std::string decode(const std::vector<int64_t>& ids,
                            std::string_view end_of_document_text = "");

  // Megatron's padded vocabulary: kVocabSize rounded up to a multiple of
  // divisible_by * tensor_parallel_size (both >= 1).
  static int64_t padded_vocab_size(int64_t divisible_by = 128, int64_t tensor_parallel_size = 1);
  // Whether a model's (padded) vocabulary can be a byte-level one:
  // kVocabSize <= vocab_size <= kMaxPaddedVocabSize.
  static bool fits_model_vocab(int64_t vocab_size);
};

}  // namespace moe::data
