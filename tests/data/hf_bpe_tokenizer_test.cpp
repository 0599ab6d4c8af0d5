// The Hugging Face byte-level BPE tokenizer against the ids of the `tokenizers` library: the
// committed fixtures of tests/fixtures/tokenizers/ (GPT-2, Llama-3, Qwen2 styles and a variant
// with lstrip / rstrip / normalized added tokens and a prefix space) compared exactly, with no
// Python; HfBpePython.* does the same on the few MB that tests/data/check_tokenizers_with_python.py
// writes. Then the pieces: GPT-2's byte mapping, lossy UTF-8, the regex translation, the refusals.
#include "moe/data/hf_bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/check.h"
#include "moe/core/error.h"
#include "moe/data/byte_unicode.h"
#include "moe/data/pretokenizer.h"
#include "moe/data/tokenizer.h"

namespace moe::data {
namespace {

using json = nlohmann::json;

const char* const kStyles[] = {"gpt2", "llama3", "qwen2", "gpt2_variant"};

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

std::vector<int64_t> ids_of(const json& list) {
  return list.get<std::vector<int64_t>>();
}

// The first index where two id lists differ, with the text around it, for failure messages.
std::string first_difference(const std::vector<int64_t>& got, const std::vector<int64_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  std::ostringstream out;
  out << "lengths " << got.size() << " vs " << want.size() << ", first difference at " << i
      << ": got";
  for (size_t k = i; k < std::min(got.size(), i + 8); ++k) out << ' ' << got[k];
  out << " / want";
  for (size_t k = i; k < std::min(want.size(), i + 8); ++k) out << ' ' << want[k];
  return out.str();
}

// Compares a tokenizer folder against its expected.json on `texts`; returns the number of
// texts that differ (each reported).
int check_against_expected(const HfBpeTokenizer& tok, const json& texts, const json& expected) {
  int failures = 0;
  const json& encode = expected["encode"];
  EXPECT_EQ(encode.size(), texts.size());
  for (size_t i = 0; i < texts.size() && i < encode.size(); ++i) {
    const std::string text = texts[i].get<std::string>();
    const std::vector<int64_t> got = tok.encode(text), want = ids_of(encode[i]);
    if (got != want) {
      ++failures;
      ADD_FAILURE() << "text " << i << " (" << text.substr(0, 60)
                    << "...): " << first_difference(got, want);
    }
  }
  const json& with_special = expected["encode_with_special_tokens"];
  for (size_t i = 0; i < with_special.size(); ++i) {
    EXPECT_EQ(tok.encode(texts[i].get<std::string>(), true), ids_of(with_special[i]))
        << "text " << i << " with special tokens";
  }
  for (const json& c : expected["decode"]) {
    const std::vector<int64_t> ids = ids_of(c["ids"]);
    EXPECT_EQ(tok.decode(ids), c["text"].get<std::string>()) << c["ids"].dump();
    EXPECT_EQ(tok.decode(ids, true), c["text_skip_special"].get<std::string>()) << c["ids"].dump();
  }
  EXPECT_EQ(tok.vocab_size(), expected["vocab_size"].get<int64_t>());
  EXPECT_EQ(tok.end_of_document(), expected["eos_id"].get<int64_t>());
  return failures;
}

TEST(HfBpeTokenizer, MatchesHuggingFaceTokenizersOnTheFixtures) {
  const json texts = read_json(test::fixture_path("tokenizers/texts.json"));
  ASSERT_GT(texts.size(), 50u);
  for (const char* style : kStyles) {
    SCOPED_TRACE(style);
    const std::string folder = test::fixture_path(std::string("tokenizers/") + style);
    const auto tok = HfBpeTokenizer::from_file(folder);
    EXPECT_EQ(check_against_expected(*tok, texts, read_json(folder + "/expected.json")), 0);
  }
}

// Decoding gives the text back where nothing normalizes it: GPT-2 and Llama-3 (Qwen's NFC and
// the variant's prefix space change the text).
TEST(HfBpeTokenizer, DecodeInvertsEncode) {
  const json texts = read_json(test::fixture_path("tokenizers/texts.json"));
  for (const char* style : {"gpt2", "llama3"}) {
    SCOPED_TRACE(style);
    const auto tok =
        HfBpeTokenizer::from_file(test::fixture_path(std::string("tokenizers/") + style));
    for (const json& t : texts) {
      const std::string text = t.get<std::string>();
      EXPECT_EQ(tok->decode(tok->encode(text)), text);
    }
  }
}

TEST(HfBpeTokenizer, AddSpecialTokensFollowsThePostProcessor) {
  const auto llama = HfBpeTokenizer::from_file(test::fixture_path("tokenizers/llama3"));
  const std::optional<int64_t> bos = llama->token_to_id("<|begin_of_text|>");
  ASSERT_TRUE(bos.has_value());
  std::vector<int64_t> want = {*bos};
  const std::vector<int64_t> plain = llama->encode("Hello world");
  want.insert(want.end(), plain.begin(), plain.end());
  EXPECT_EQ(llama->encode("Hello world", true), want);
  EXPECT_EQ(llama->encode("", true), std::vector<int64_t>{*bos});
  EXPECT_EQ(llama->decode(want, true), "Hello world");  // <|begin_of_text|> is special
  const auto qwen = HfBpeTokenizer::from_file(test::fixture_path("tokenizers/qwen2"));
  EXPECT_EQ(qwen->encode("Hello world", true), qwen->encode("Hello world"));
}

TEST(HfBpeTokenizer, SpecialTokensInTheTextAreTheirIds) {
  const auto qwen = HfBpeTokenizer::from_file(test::fixture_path("tokenizers/qwen2"));
  const int64_t start = qwen->token_to_id("<|im_start|>").value();
  const int64_t end = qwen->token_to_id("<|im_end|>").value();
  const std::vector<int64_t> ids = qwen->encode("<|im_start|>user<|im_end|><|im_end|>");
  ASSERT_GE(ids.size(), 4u);  // <|im_start|>, "user" (1 or more tokens), <|im_end|> twice
  EXPECT_EQ(ids.front(), start);
  EXPECT_EQ(ids[ids.size() - 2], end);
  EXPECT_EQ(ids.back(), end);
  EXPECT_EQ(qwen->decode(ids), "<|im_start|>user<|im_end|><|im_end|>");
  EXPECT_EQ(qwen->decode(ids, true), "user");
}

TEST(HfBpeTokenizer, ConcurrentEncodingGivesTheSameIds) {
  const json texts = read_json(test::fixture_path("tokenizers/texts.json"));
  const std::string folder = test::fixture_path("tokenizers/qwen2");
  const json expected = read_json(folder + "/expected.json");
  const auto tok = HfBpeTokenizer::from_file(folder);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round)
        for (size_t i = t; i < texts.size() + t; ++i) {
          const size_t k = i % texts.size();
          if (tok->encode(texts[k].get<std::string>()) != ids_of(expected["encode"][k]))
            ++mismatches;
        }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(HfBpeTokenizer, MakeTokenizerReadsHuggingFaceFolders) {
  const std::string folder = test::fixture_path("tokenizers/llama3");
  for (const std::string type : {"HuggingFaceTokenizer", ""}) {
    const std::unique_ptr<Tokenizer> tok = make_tokenizer(type, folder);
    EXPECT_NE(tok->description().find("llama3/tokenizer.json"), std::string::npos)
        << tok->description();
    EXPECT_EQ(tok->vocab_size(), 1536 + 256);
    // Megatron's HuggingFaceTokenizer.eod: eos_token_id, here tokenizer_config.json's
    // <|end_of_text|>, the second Llama-3 special token.
    EXPECT_EQ(tok->end_of_document(), 1537);
    EXPECT_EQ(tok->decode(tok->encode("Hello, world!")), "Hello, world!");
  }
  const std::unique_ptr<Tokenizer> file = make_tokenizer("", folder + "/tokenizer.json");
  EXPECT_EQ(file->encode("abc def"), make_tokenizer("", folder)->encode("abc def"));
  EXPECT_THROW(make_tokenizer("HuggingFaceTokenizer", ""), Error);
  EXPECT_THROW(make_tokenizer("HuggingFaceTokenizer", folder + "/missing"), Error);
  try {
    make_tokenizer("BertWordPieceCase", folder);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HuggingFaceTokenizer"), std::string::npos) << e.what();
  }
}

TEST(HfBpeTokenizer, BadInputIsAnError) {
  const auto tok = HfBpeTokenizer::from_file(test::fixture_path("tokenizers/gpt2"));
  EXPECT_THROW(tok->encode("ok \xC3\x28 bad"), Error);  // invalid UTF-8
  EXPECT_THROW(tok->encode("\xED\xA0\x80"), Error);     // a surrogate
  EXPECT_THROW(tok->decode({1, tok->vocab_size()}), Error);
  EXPECT_THROW(tok->decode({-1}), Error);
  EXPECT_TRUE(tok->encode("").empty());
}

// ---- refusals: every field this reader does not implement names itself --------------------

json fixture_config(const char* style) {
  return read_json(test::fixture_path(std::string("tokenizers/") + style + "/tokenizer.json"));
}

void expect_refused(const json& config, const std::string& words) {
  try {
    HfBpeTokenizer tok(config.dump(), "test.json");
    ADD_FAILURE() << "accepted; expected an error naming " << words;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(HfBpeTokenizer, RefusesWhatItDoesNotImplement) {
  json c = fixture_config("qwen2");
  c["model"]["type"] = "WordPiece";
  expect_refused(c, "model.type = \"WordPiece\"");
  c = fixture_config("qwen2");
  c["normalizer"] = {{"type", "NFKC"}};
  expect_refused(c, "normalizer.type = \"NFKC\"");
  c = fixture_config("qwen2");
  c["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  expect_refused(c, "pre_tokenizer.pretokenizers[0].behavior = \"Removed\"");
  c = fixture_config("qwen2");
  c["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\d+|\\s+";
  expect_refused(c, "\\d");
  c = fixture_config("qwen2");
  c["pre_tokenizer"]["pretokenizers"][1] = {{"type", "Whitespace"}};
  expect_refused(c, "pre_tokenizer.pretokenizers[1].type = \"Whitespace\"");
  c = fixture_config("qwen2");
  c["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}, {"prepend_scheme", "twice"}};
  expect_refused(c, "pre_tokenizer.prepend_scheme = \"twice\"");
  c = fixture_config("gpt2");
  c["truncation"] = {{"max_length", 8}};
  expect_refused(c, "truncation");
  c = fixture_config("gpt2");
  c["model"]["dropout"] = 0.1;
  expect_refused(c, "model.dropout = 0.1");
  c = fixture_config("gpt2");
  c["model"]["byte_fallback"] = true;
  expect_refused(c, "model.byte_fallback");
  c = fixture_config("gpt2");
  c["added_tokens"][0]["single_word"] = true;
  expect_refused(c, "added_tokens[0].single_word");
  c = fixture_config("gpt2");
  c["decoder"] = {{"type", "WordPiece"}};
  expect_refused(c, "decoder = {\"type\":\"WordPiece\"}");
  c = fixture_config("gpt2");
  c["post_processor"] = {{"type", "RobertaProcessing"}};
  expect_refused(c, "post_processor.type = \"RobertaProcessing\"");
  c = fixture_config("gpt2");
  c["model"]["surprise"] = 1;
  expect_refused(c, "'surprise'");
  c = fixture_config("gpt2");
  c["model"]["merges"][0] = "a b c";
  expect_refused(c, "model.merges[0]");
}

// ---- the pieces ------------------------------------------------------------------------------

TEST(HfBpeTokenizer, Gpt2ByteMapping) {
  EXPECT_EQ(byte_to_unicode(' '), U'\u0120');   // 'Ġ'
  EXPECT_EQ(byte_to_unicode('\n'), U'\u010A');  // 'Ċ'
  EXPECT_EQ(byte_to_unicode('!'), U'!');
  EXPECT_EQ(byte_to_unicode(0x00), U'\u0100');
  EXPECT_EQ(byte_to_unicode(0x7F), U'\u0121');
  EXPECT_EQ(byte_to_unicode(0xAD), U'\u0143');
  EXPECT_EQ(byte_to_unicode(0xE9), U'\u00E9');
  for (int b = 0; b < 256; ++b)
    EXPECT_EQ(unicode_to_byte(byte_to_unicode(static_cast<uint8_t>(b))), b);
  EXPECT_FALSE(unicode_to_byte(U'\u0144').has_value());
  EXPECT_FALSE(unicode_to_byte(U'\u00AD').has_value());  // 0xAD itself is remapped
  EXPECT_EQ(byte_level_bytes("\xC4\xA0the"), " the");
  EXPECT_FALSE(byte_level_bytes("\xCC\x81").has_value());  // U+0301
}

TEST(HfBpeTokenizer, LossyUtf8ReplacesMaximalSubparts) {
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98"), "\xEF\xBF\xBD");                          // cut emoji: one
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong: two
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(utf8_lossy("a\xE2\x82z"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("ok\xE2\x82\xAC\xFF"), 5u);
  EXPECT_FALSE(first_invalid_utf8("\xF0\x9F\x98\x80").has_value());
}

TEST(HfBpeTokenizer, RegexTranslation) {
  const std::string t = translate_onig_pattern(R"([^\r\n\p{L}\p{N}]?\p{L}+|\s+(?!\S))", "f");
  EXPECT_NE(t.find("[^\\r\\n\\p{L}\\x{1C89}-\\x{1C8A}"), std::string::npos) << t;
  EXPECT_NE(t.find("[\\p{L}\\x{1C89}-\\x{1C8A}"), std::string::npos) << t;
  EXPECT_EQ(t.find("\\s"), std::string::npos) << t;
  EXPECT_NE(t.find("(?![^\\t\\n"), std::string::npos) << t;
  EXPECT_EQ(translate_onig_pattern(R"(\u00e9(?i:'s))", "f"), R"(\x{00e9}(?i:'s))");
  for (const char* bad : {R"(\d)", R"(\w+)", R"(^a)", R"(a$)", R"(\p{Lu})", R"([\S])", R"((?m:a))",
                          R"([a[b]])", R"(\1)", R"([a&&b])"})
    EXPECT_THROW(translate_onig_pattern(bad, "f"), Error) << bad;
}

// Oniguruma's behaviour where PCRE2's default differs: U+180E is no whitespace, letters of
// Unicode 16 are letters, and ſ matches 's case-insensitively.
TEST(HfBpeTokenizer, RegexMatchesOnigurumaWherePcre2Differs) {
  const PretokenizerRegex spaces(R"(\s+)", false, "f");
  std::vector<std::string_view> pieces;
  spaces.split_isolated(
      "a\xE1\xA0\x8E"
      "b c",
      pieces);  // a U+180E b, space, c
  EXPECT_EQ(pieces, (std::vector<std::string_view>{"a\xE1\xA0\x8E"
                                                   "b",
                                                   " ", "c"}));
  const PretokenizerRegex letters(R"(\p{L}+)", false, "f");
  pieces.clear();
  letters.split_isolated("1\xF0\xAE\xAF\xB0\xF0\xAE\xAF\xB1 2", pieces);  // U+2EBF0, U+2EBF1
  EXPECT_EQ(pieces, (std::vector<std::string_view>{"1", "\xF0\xAE\xAF\xB0\xF0\xAE\xAF\xB1", " 2"}));
  const PretokenizerRegex contraction(R"((?i:'s|'ll))", false, "f");
  pieces.clear();
  contraction.split_isolated("it'\xC5\xBFx'LL", pieces);  // 'ſ
  EXPECT_EQ(pieces, (std::vector<std::string_view>{"it", "'\xC5\xBF", "x", "'LL"}));
  // Empty matches: Oniguruma's iterator skips one right after a match, and pieces are never
  // empty.
  const PretokenizerRegex maybe("a*", false, "f");
  pieces.clear();
  maybe.split_isolated("baab", pieces);
  EXPECT_EQ(pieces, (std::vector<std::string_view>{"b", "aa", "b"}));
}

// A long run of whitespace goes through \s+(?!\S) backtracking and a long BPE word.
TEST(HfBpeTokenizer, LongRunsWork) {
  const auto tok = HfBpeTokenizer::from_file(test::fixture_path("tokenizers/llama3"));
  const std::string text = "a" + std::string(200000, ' ') + "b" + std::string(100000, 'x');
  EXPECT_EQ(tok->decode(tok->encode(text)), text);
}

// ---- the few MB of tests/data/check_tokenizers_with_python.py --------------------------------

TEST(HfBpePython, MatchesHuggingFaceTokenizersOnMegabytes) {
  const char* dir = std::getenv("MOE_TOKENIZERS_PY_DIR");
  if (dir == nullptr) GTEST_SKIP() << "set by tests/data/check_tokenizers_with_python.py";
  const json texts = read_json(std::string(dir) + "/texts.json");
  const json styles = read_json(std::string(dir) + "/styles.json");
  ASSERT_FALSE(styles.empty());
  for (const json& style : styles) {
    SCOPED_TRACE(style.get<std::string>());
    const std::string folder = std::string(dir) + "/" + style.get<std::string>();
    const auto tok = HfBpeTokenizer::from_file(folder);
    EXPECT_EQ(check_against_expected(*tok, texts, read_json(folder + "/expected.json")), 0);
  }
}

}  // namespace
}  // namespace moe::data
