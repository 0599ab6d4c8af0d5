// Hugging Face tokenizer.json files of the SentencePiece kind (Llama-2, Mixtral: BPE with
// byte_fallback, Prepend / Replace normalizers or Metaspace, the Replace / ByteFallback / Fuse /
// Strip decoders) on a tiny vocabulary written here, ids worked out by hand; and the refusals.
// HfBpePython.* compares such files made by pip's `tokenizers` on megabytes
// (tests/data/check_tokenizers_with_python.py).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/data/hf_bpe_tokenizer.h"

namespace moe::data {
namespace {

using json = nlohmann::json;

json replace_step(const char* from, const char* to) {
  return {{"type", "Replace"}, {"pattern", {{"String", from}}}, {"content", to}};
}

// Llama-2's file, as transformers' LlamaConverter writes it (legacy): "▁" is U+2581.
json llama2_style() {
  json vocab = {{"<unk>", 0},   {"<s>", 1},     {"</s>", 2},    {"\u2581", 3},   {"a", 4},
                {"b", 5},       {"\u2581a", 6}, {"ab", 7},      {"\u2581ab", 8}, {"<0xF0>", 9},
                {"<0x9F>", 10}, {"<0x99>", 11}, {"<0x82>", 12}, {"<0x0A>", 13}};
  json added = json::array();
  for (int id = 0; id < 3; ++id)
    added.push_back({{"id", id},
                     {"content", id == 0   ? "<unk>"
                                 : id == 1 ? "<s>"
                                           : "</s>"},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "\u2581"}}, replace_step(" ", "\u2581")}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single",
             {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair", json::array()},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {replace_step("\u2581", " "),
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", "<unk>"},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", json::array({json::array({"\u2581", "a"}), json::array({"a", "b"}),
                                    json::array({"\u2581a", "b"})})}}}};
}

TEST(HfSentencePieceKind, Llama2StyleIds) {
  const HfBpeTokenizer tok(llama2_style().dump(), "llama2.json");
  EXPECT_EQ(tok.vocab_size(), 14);
  // "ab ab" -> "▁ab▁ab", one word: ▁+a (rank 0) twice, then ▁a+b (rank 2).
  EXPECT_EQ(tok.encode("ab ab"), (std::vector<int64_t>{8, 8}));
  // 🙂 is not in the vocabulary: its four UTF-8 bytes as <0xXX> tokens.
  EXPECT_EQ(tok.encode("\xF0\x9F\x99\x82"), (std::vector<int64_t>{3, 9, 10, 11, 12}));
  // c has no token and no byte tokens: <unk>, fused over the run.
  EXPECT_EQ(tok.encode("c"), (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(tok.encode("cc"), (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(tok.encode("ab", true), (std::vector<int64_t>{1, 8}));
  // The special token splits the text first; Prepend applies to the stretch after it too.
  EXPECT_EQ(tok.encode("<s>ab"), (std::vector<int64_t>{1, 8}));
  EXPECT_TRUE(tok.encode("").empty());
  // Decoder: ▁ -> ' ', bytes -> UTF-8 (U+FFFD per byte when invalid), one leading space off.
  EXPECT_EQ(tok.decode({8, 8}), "ab ab");
  EXPECT_EQ(tok.decode({1, 8, 8}), "<s> ab ab");
  EXPECT_EQ(tok.decode({1, 8, 8}, true), "ab ab");
  EXPECT_EQ(tok.decode({3, 9, 10, 11, 12}), "\xF0\x9F\x99\x82");
  EXPECT_EQ(tok.decode({9, 10, 4}),
            "\xEF\xBF\xBD\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(tok.decode({13, 6}), "\n a");
}

TEST(HfSentencePieceKind, MetaspaceSplitsBeforeEachReplacement) {
  json c = llama2_style();
  c["normalizer"] = nullptr;
  c["pre_tokenizer"] = {{"type", "Metaspace"},
                        {"replacement", "\u2581"},
                        {"prepend_scheme", "always"},
                        {"split", true}};
  const HfBpeTokenizer always(c.dump(), "metaspace.json");
  EXPECT_EQ(always.encode("ab ab"), (std::vector<int64_t>{8, 8}));
  // "a  b" -> "▁a▁▁b" -> "▁a", "▁", "▁b"
  EXPECT_EQ(always.encode("a  b"), (std::vector<int64_t>{6, 3, 3, 5}));
  EXPECT_EQ(always.encode("<s>b"), (std::vector<int64_t>{1, 3, 5}));
  // "first": only the text at offset 0 of the input gets the ▁.
  c["pre_tokenizer"]["prepend_scheme"] = "first";
  c["pre_tokenizer"]["split"] = false;
  const HfBpeTokenizer first(c.dump(), "metaspace.json");
  EXPECT_EQ(first.encode("b<s>b"), (std::vector<int64_t>{3, 5, 1, 5}));
  c["pre_tokenizer"]["prepend_scheme"] = "never";
  EXPECT_EQ(HfBpeTokenizer(c.dump(), "metaspace.json").encode("b"), (std::vector<int64_t>{5}));
  // The Metaspace decoder drops the first token's ▁ and turns the others into spaces.
  c["decoder"] = {{"type", "Metaspace"},
                  {"replacement", "\u2581"},
                  {"prepend_scheme", "always"},
                  {"split", true}};
  EXPECT_EQ(HfBpeTokenizer(c.dump(), "metaspace.json").decode({8, 8}), "ab ab");
}

void expect_refused(const json& config, const std::string& words) {
  try {
    HfBpeTokenizer tok(config.dump(), "sp.json");
    ADD_FAILURE() << "accepted; expected an error naming " << words;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sp.json"), std::string::npos) << e.what();
  }
}

TEST(HfSentencePieceKind, RefusesWhatItDoesNotImplement) {
  json c = llama2_style();
  c["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", " +"}};
  expect_refused(c, "normalizer.normalizers[1].pattern = {\"Regex\":\" +\"}");
  c = llama2_style();
  c["normalizer"]["normalizers"][0] = {{"type", "Lowercase"}};
  expect_refused(c, "normalizer.normalizers[0].type = \"Lowercase\"");
  c = llama2_style();
  c["decoder"]["decoders"][0] = {{"type", "CTC"}};
  expect_refused(c, "decoder.decoders[0].type = \"CTC\"");
  c = llama2_style();
  c["decoder"]["decoders"][3]["start"] = -1;
  expect_refused(c, "decoder.decoders[3].start must be a count");
  c = llama2_style();
  c["decoder"] = nullptr;
  expect_refused(c, "decoder = null");
  c = llama2_style();
  c["decoder"] = {{"type", "ByteLevel"}};
  expect_refused(c, "decoder.type = \"ByteLevel\"");
  c = llama2_style();
  c["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"extra", 1}};
  expect_refused(c, "pre_tokenizer has the key 'extra'");
  c = llama2_style();
  c["model"]["unk_token"] = "<nothing>";
  expect_refused(c, "unk_token '<nothing>'");
}

}  // namespace
}  // namespace moe::data
