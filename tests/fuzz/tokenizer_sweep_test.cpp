// The bad-input sweep of the Hugging Face tokenizer.json reader (docs/bad-input.md): the four
// fixture styles (GPT-2, a GPT-2 variant with NFC and added tokens, Llama-3, Qwen2) and their
// tokenizer_config.json, mutated through their JSON (type tags, regexes, vocabulary ids, merges,
// added tokens, the template) and at the byte level. A tokenizer that loads is then used as
// `moe preprocess` and `moe generate` use it: texts encoded with and without the template, the
// ids decoded, ids outside the vocabulary refused by decode.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/check.h"
#include "fuzz/sweep.h"
#include "moe/data/hf_bpe_tokenizer.h"

namespace moe::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using sweep::Mutant;

const std::vector<std::string>& tokenizer_words() {
  static const std::vector<std::string> words{"BPE",
                                              "WordPiece",
                                              "Unigram",
                                              "ByteLevel",
                                              "Sequence",
                                              "Split",
                                              "NFC",
                                              "NFKC",
                                              "Lowercase",
                                              "TemplateProcessing",
                                              "RobertaProcessing",
                                              "Isolated",
                                              "Removed",
                                              "MergedWithPrevious",
                                              "A",
                                              "B",
                                              "(a+)+$",
                                              "[",
                                              "(",
                                              "\\\\",
                                              "\\\\p{Zz}",
                                              "\\\\d+",
                                              "^",
                                              "$",
                                              "(?i:'s)",
                                              "(?m:x)",
                                              "",
                                              ".*",
                                              "a{1000000}",
                                              "\\\\uD800",
                                              "(?<x>a)\\\\k<x>",
                                              "[[:alpha:]]",
                                              "<|endoftext|>",
                                              "\\u0120",
                                              "\\u0120the",
                                              "a",
                                              " ",
                                              "a b",
                                              "a b c",
                                              "\\u0000",
                                              "\\ud83c\\udf89"};
  return words;
}

// Texts that reach every stage: ASCII words and contractions, numbers, whitespace runs,
// composed and decomposed accents (NFC), CJK and emoji, the special tokens' texts, a long word.
const std::vector<std::string>& texts() {
  static const std::vector<std::string> t{
      "Hello world, it's 2024!",
      "  leading\n\n\ttabs and   spaces  ",
      "na\xc3\xafve cafe\xcc\x81 \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x8e\x89",
      "<|endoftext|>x<|begin_of_text|> <|end_of_text|><|im_start|>",
      std::string(300, 'a') + " " + std::string(200, '7'),
      ""};
  return t;
}

void use(const HfBpeTokenizer& tokenizer) {
  (void)tokenizer.vocab_size();
  (void)tokenizer.end_of_document();
  for (const std::string& text : texts()) {
    for (const bool special : {false, true}) {
      const std::vector<int64_t> ids = tokenizer.encode(text, special);
      (void)tokenizer.decode(ids, false);
      (void)tokenizer.decode(ids, true);
    }
  }
  for (const int64_t id : {int64_t{0}, tokenizer.vocab_size() - 1}) {
    try {
      (void)tokenizer.decode({id});
    } catch (const Error&) {  // an id with no token (a hole in the vocabulary)
    }
  }
  (void)tokenizer.token_to_id("<|endoftext|>");
}

class TokenizerSweep : public ::testing::TestWithParam<const char*> {};

TEST_P(TokenizerSweep, TokenizerJson) {
  const std::string style = GetParam();
  sweep::ScratchDir dir;
  const fs::path folder = dir.dir() / "tok";
  fs::create_directories(folder);
  const std::string json_path = (folder / "tokenizer.json").string();
  const std::string config_path = (folder / "tokenizer_config.json").string();
  const std::string valid_json =
      sweep::read_file(test::fixture_path("tokenizers/" + style + "/tokenizer.json"));
  const std::string valid_config =
      sweep::read_file(test::fixture_path("tokenizers/" + style + "/tokenizer_config.json"));
  sweep::write_file(json_path, valid_json);
  sweep::write_file(config_path, valid_config);

  sweep::Sweep sweep("tokenizer.json (" + style + ")");
  const auto load = [&] { use(*HfBpeTokenizer::from_file(folder.string())); };
  const auto run_json = [&](const Mutant& m) {
    sweep::write_file(json_path, m.bytes);
    const bool accepted = sweep.check(m, {"tokenizer.json"}, load);
    sweep::write_file(json_path, valid_json);
    return accepted;
  };
  const auto run_config = [&](Mutant m) {
    m.what = "tokenizer_config.json: " + m.what;
    sweep::write_file(config_path, m.bytes);
    const bool accepted = sweep.check(m, {"tokenizer_config.json", "tokenizer.json"}, load);
    sweep::write_file(config_path, valid_config);
    return accepted;
  };

  EXPECT_TRUE(run_json({"unchanged", valid_json, ""}));
  for (const Mutant& m : sweep::json_document_cases(valid_json)) run_json(m);
  for (const Mutant& m : sweep::json_document_cases(valid_config)) run_config(m);
  for (const Mutant& m : sweep::truncations(valid_json, 12)) run_json(m);

  // Edits of the parsed document that random text edits rarely make.
  const json root = json::parse(valid_json);
  const auto edited = [&](const std::string& what, const std::function<void(json&)>& edit) {
    json copy = root;
    edit(copy);
    run_json({what, copy.dump(), ""});
  };
  const int64_t big_id = int64_t{1} << 62;
  edited("a vocabulary id of 2^31 - 1", [](json& j) { j["model"]["vocab"]["zz"] = 2147483647; });
  edited("a vocabulary id of 2^31", [](json& j) { j["model"]["vocab"]["zz"] = 2147483648ll; });
  edited("a negative vocabulary id", [](json& j) { j["model"]["vocab"]["zz"] = -1; });
  edited("an added token id of 2^62", [&](json& j) {
    j["added_tokens"].push_back({{"id", big_id}, {"content", "<zz>"}, {"special", true}});
  });
  edited("an added token id of 2^31", [&](json& j) {
    j["added_tokens"].push_back({{"id", 2147483648ll}, {"content", "<zz>"}, {"special", true}});
  });
  edited("an added token with empty content", [&](json& j) {
    j["added_tokens"].push_back({{"id", 5}, {"content", ""}, {"special", true}});
  });
  edited("no model", [](json& j) { j.erase("model"); });
  edited("no vocabulary", [](json& j) { j["model"].erase("vocab"); });
  edited("a merge of unknown tokens", [](json& j) {
    j["model"]["merges"].push_back(json::array({"\xe6\x9d\xb1", "\xe4\xba\xac"}));
  });
  edited("a merge of one token", [](json& j) { j["model"]["merges"].push_back("onlyone"); });
  edited("an unknown unk_token", [](json& j) { j["model"]["unk_token"] = "<nope>"; });
  edited("a Sequence normalizer without its list", [](json& j) {
    j["normalizer"] = {{"type", "Sequence"}};
  });
  edited("a Sequence pre-tokenizer without its list", [](json& j) {
    j["pre_tokenizer"] = {{"type", "Sequence"}};
  });
  edited("a Sequence post-processor without its list", [](json& j) {
    j["post_processor"] = {{"type", "Sequence"}};
  });
  edited("a template naming an unknown special token", [](json& j) {
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<nope>"}}}}, {{"Sequence", {{"id", "A"}}}}}}};
  });
  edited("a template whose special token has no ids", [](json& j) {
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}}}}}};
  });
  edited("a template whose special token is a number", [](json& j) {
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", 7}}}}, {{"Sequence", {{"id", "A"}}}}}},
        {"special_tokens", {{"7", {{"ids", {1}}}}}}};
  });
  edited("a template Sequence that is not an object", [](json& j) {
    j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", {{{"Sequence", 1}}}}};
  });
  edited("a template item that is not an object", [](json& j) {
    j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", {1, "A"}}};
  });
  for (const char* regex : {"(a+)+b", "(a|aa)*c", "(\\s*)*x", "(.*a){12}", "", "(?=a)", "a*",
                            "\\p{L}*?", "[", "(?i:\\u0130)"}) {
    edited(std::string("a Split regex '") + regex + "'", [&](json& j) {
      j["pre_tokenizer"] = {
          {"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", regex}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    });
  }

  for (const uint64_t i : sweep::random_cases(100)) {
    sweep::Rng which(sweep::case_seed(sweep::base_seed(), "tokenizer file " + style, i));
    if (which.percent(85)) {
      run_json(sweep::random_mutant("tokenizer " + style, i, [&](sweep::Rng& rng) {
        return rng.percent(85) ? sweep::mutate_json(valid_json, rng, tokenizer_words())
                               : sweep::mutate_bytes(valid_json, rng, valid_json.size());
      }));
    } else {
      run_config(sweep::random_mutant("tokenizer " + style, i, [&](sweep::Rng& rng) {
        return sweep::mutate_json(valid_config, rng, tokenizer_words());
      }));
    }
  }
  EXPECT_GT(sweep.refused(), 0);
}

INSTANTIATE_TEST_SUITE_P(Styles, TokenizerSweep,
                         ::testing::Values("gpt2", "gpt2_variant", "llama3", "qwen2"));

}  // namespace
}  // namespace moe::data
