#include "moe/data/byte_tokenizer.h"

#include "moe/core/error.h"

namespace moe::data {

std::vector<int64_t> ByteTokenizer::encode(std::string_view text) {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  // Through unsigned char: bytes >= 0x80 are 128..255, not negative chars.
  for (const char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

std::vector<int64_t> ByteTokenizer::encode_document(std::string_view text) {
  std::vector<int64_t> ids = encode(text);
  ids.push_back(kEndOfDocument);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids,
                                  std::string_view end_of_document_text) {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids[i];
    if (id == kEndOfDocument) {
      text.append(end_of_document_text);
      continue;
    }
    MOE_CHECK(id >= 0 && id < kNumBytes, "byte tokenizer: id ", id, " at position ", i,
              " is not a token (bytes are 0..255, end of document is 256; ids from ", kVocabSize,
              " on are vocabulary padding)");
    text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
  }
  return text;
}

int64_t ByteTokenizer::padded_vocab_size(int64_t divisible_by, int64_t tensor_parallel_size) {
  MOE_CHECK(divisible_by >= 1 && tensor_parallel_size >= 1,
            "byte tokenizer: vocabulary padding needs --make-vocab-size-divisible-by >= 1 and a "
            "tensor-parallel size >= 1, got ",
            divisible_by, " and ", tensor_parallel_size);
  const int64_t multiple = divisible_by * tensor_parallel_size;
  return (kVocabSize + multiple - 1) / multiple * multiple;
}

bool ByteTokenizer::fits_model_vocab(int64_t vocab_size) {
  return vocab_size >= kVocabSize && vocab_size <= kMaxPaddedVocabSize;
}

}  // namespace moe::data
