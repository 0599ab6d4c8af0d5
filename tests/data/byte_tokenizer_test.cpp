// The byte-level tokenizer: bytes are their own ids, 256 ends a document, padding follows
// Megatron's rule, and anything else is an error naming the id.
#include "moe/data/byte_tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "moe/core/error.h"

namespace moe {
namespace {

using data::ByteTokenizer;

TEST(ByteTokenizer, EncodesBytesAsTheirValues) {
  EXPECT_EQ(ByteTokenizer::encode("Hi!\n"), (std::vector<int64_t>{72, 105, 33, 10}));
  // UTF-8 "é" is 0xC3 0xA9: the ids are the unsigned bytes, never negative chars.
  EXPECT_EQ(ByteTokenizer::encode("\xC3\xA9"), (std::vector<int64_t>{195, 169}));
  EXPECT_TRUE(ByteTokenizer::encode("").empty());
  EXPECT_EQ(ByteTokenizer::encode_document("ab"), (std::vector<int64_t>{97, 98, 256}));
  EXPECT_EQ(ByteTokenizer::encode_document(""), (std::vector<int64_t>{256}));
}

TEST(ByteTokenizer, EveryByteRoundTrips) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::vector<int64_t> ids = ByteTokenizer::encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[static_cast<size_t>(b)], b);
  EXPECT_EQ(ByteTokenizer::decode(ids), all);
}

TEST(ByteTokenizer, EndOfDocumentDecodesToTheGivenText) {
  const std::vector<int64_t> ids = {97, 256, 98, 256};
  EXPECT_EQ(ByteTokenizer::decode(ids), "ab");
  EXPECT_EQ(ByteTokenizer::decode(ids, "<eod>"), "a<eod>b<eod>");
}

TEST(ByteTokenizer, InvalidIdsAreErrorsNamingThem) {
  for (const int64_t bad : {int64_t{257}, int64_t{383}, int64_t{-1}}) {
    try {
      (void)ByteTokenizer::decode({104, 105, bad});
      FAIL() << "decode accepted id " << bad;
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("id " + std::to_string(bad) + " at position 2"), std::string::npos)
          << message;
    }
  }
}

TEST(ByteTokenizer, PaddedVocabularyFollowsMegatron) {
  EXPECT_EQ(ByteTokenizer::kVocabSize, 257);
  EXPECT_EQ(ByteTokenizer::padded_vocab_size(), 384);  // --make-vocab-size-divisible-by 128
  EXPECT_EQ(ByteTokenizer::padded_vocab_size(128, 8), 1024);
  EXPECT_EQ(ByteTokenizer::padded_vocab_size(64), 320);
  EXPECT_EQ(ByteTokenizer::padded_vocab_size(1), 257);
  EXPECT_EQ(ByteTokenizer::padded_vocab_size(257), 257);
  EXPECT_THROW((void)ByteTokenizer::padded_vocab_size(0), Error);
  EXPECT_THROW((void)ByteTokenizer::padded_vocab_size(128, 0), Error);
}

TEST(ByteTokenizer, FitsOnlyByteSizedVocabularies) {
  EXPECT_FALSE(ByteTokenizer::fits_model_vocab(256));
  EXPECT_TRUE(ByteTokenizer::fits_model_vocab(257));
  EXPECT_TRUE(ByteTokenizer::fits_model_vocab(384));
  EXPECT_TRUE(ByteTokenizer::fits_model_vocab(1024));
  EXPECT_FALSE(ByteTokenizer::fits_model_vocab(1025));
  EXPECT_FALSE(ByteTokenizer::fits_model_vocab(32000));
}

}  // namespace
}  // namespace moe
