#include "moe/data/tokenizer.h"

#include "moe/core/error.h"
#include "moe/data/byte_tokenizer.h"
#include "moe/data/hf_bpe_tokenizer.h"
#include "moe/data/sentencepiece_tokenizer.h"

namespace moe::data {

std::vector<int64_t> ByteLevelTokenizer::encode(std::string_view text) const {
  return ByteTokenizer::encode(text);
}

std::string ByteLevelTokenizer::decode(const std::vector<int64_t>& ids) const {
  return ByteTokenizer::decode(ids);
}

int64_t ByteLevelTokenizer::vocab_size() const { return ByteTokenizer::kVocabSize; }

std::optional<int64_t> ByteLevelTokenizer::end_of_document() const {
  return ByteTokenizer::kEndOfDocument;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& tokenizer_type,
                                          const std::string& tokenizer_model) {
  if (tokenizer_type == "byte" || (tokenizer_type.empty() && tokenizer_model.empty())) {
    MOE_CHECK(tokenizer_model.empty(), "--tokenizer-type byte takes no --tokenizer-model (got ",
              tokenizer_model, ")");
    return std::make_unique<ByteLevelTokenizer>();
  }
  if (tokenizer_type == "HuggingFaceTokenizer" || tokenizer_type.empty()) {
    MOE_CHECK(!tokenizer_model.empty(),
              "--tokenizer-type HuggingFaceTokenizer needs --tokenizer-model (a tokenizer.json, "
              "or a folder holding one)");
    return HfBpeTokenizer::from_file(tokenizer_model);
  }
  if (tokenizer_type == "SentencePieceTokenizer" || tokenizer_type == "Llama2Tokenizer") {
    MOE_CHECK(!tokenizer_model.empty(), "--tokenizer-type ", tokenizer_type,
              " needs --tokenizer-model (a tokenizer.model, or a folder holding one)");
    return std::make_unique<SentencePieceTokenizer>(
        tokenizer_model, tokenizer_type == "Llama2Tokenizer"
                             ? SentencePieceTokenizer::Kind::kLlama2
                             : SentencePieceTokenizer::Kind::kSentencePiece);
  }
  MOE_FAIL("--tokenizer-type '", tokenizer_type,
           "' is not supported by this build (supported: ", kTokenizerTypes, ")");
}

}  // namespace moe::data
