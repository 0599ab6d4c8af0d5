// Megatron's SentencePiece tokenizers (Llama2Tokenizer, SentencePieceTokenizer) over a
// tokenizer.model that the test trains with the SentencePiece library's own trainer (no Python,
// no download): Megatron's ids, special tokens and detokenize, and the errors for bad files.
// SentencePiecePython.* compares both types with pip's `sentencepiece` on the few MB that
// tests/data/check_tokenizers_with_python.py writes.
#include "moe/data/sentencepiece_tokenizer.h"

#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "memory_corpus.h"
#include "moe/core/error.h"
#include "moe/data/tokenizer.h"

namespace moe::data {
namespace {

using json = nlohmann::json;

// A BPE model of 400 pieces with byte_fallback, trained once per process on a small corpus.
const std::string& trained_model() {
  static const std::string path = [] {
    const auto dir = testing::fresh_folder("spm_model");
    const std::string corpus = (dir / "corpus.txt").string();
    std::ofstream out(corpus);
    const char* lines[] = {"the quick brown fox jumps over the lazy dog",
                           "tokenizers cut text into pieces, and pieces into ids",
                           "Mixtral and Llama 2 read a SentencePiece model",
                           "café naïve résumé über straße", "数据 处理 模型 训练"};
    for (int i = 0; i < 200; ++i) out << lines[i % 5] << " " << i << "\n";
    out.close();
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" + corpus + " --model_prefix=" + (dir / "tokenizer").string() +
        " --model_type=bpe --vocab_size=400 --byte_fallback=true --minloglevel=2"
        " --num_threads=1 --character_coverage=1.0");
    EXPECT_TRUE(status.ok()) << status.ToString();
    return (dir / "tokenizer.model").string();
  }();
  return path;
}

TEST(SentencePieceTokenizer, Llama2AddsBosToDocumentsAndEndsThemWithEos) {
  const SentencePieceTokenizer tok(trained_model(), SentencePieceTokenizer::Kind::kLlama2);
  EXPECT_EQ(tok.vocab_size(), 400);
  EXPECT_EQ(tok.bos(), 1);  // SentencePiece's defaults: <unk> 0, <s> 1, </s> 2, no pad
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_EQ(tok.pad(), -1);
  EXPECT_EQ(tok.end_of_document(), 2);
  // (The default nmt_nfkc normalization drops control characters and folds whitespace runs.)
  const std::string text = "the lazy fox, café 数据 🙂 end";
  const std::vector<int64_t> ids = tok.encode(text);
  ASSERT_FALSE(ids.empty());
  EXPECT_NE(ids.front(), 1);
  std::vector<int64_t> document = tok.encode_document(text);
  ASSERT_EQ(document.size(), ids.size() + 1);
  EXPECT_EQ(document.front(), 1);  // Megatron's Llama2Tokenizer.tokenize(text, bos=True)
  EXPECT_EQ(std::vector<int64_t>(document.begin() + 1, document.end()), ids);
  // 🙂 is not a piece: byte_fallback gives its four UTF-8 bytes, decoded back.
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.decode(document), text);  // control pieces decode to nothing
  EXPECT_TRUE(tok.encode("").empty());
  EXPECT_NE(tok.description().find("Llama2Tokenizer("), std::string::npos);
}

TEST(SentencePieceTokenizer, MegatronSpecialTokensComeAfterThePieces) {
  const SentencePieceTokenizer tok(trained_model(), SentencePieceTokenizer::Kind::kSentencePiece);
  // <CLS> 400, <SEP> 401, <EOD> 402, <MASK> 403, <PAD> 404 (the model has no pad piece); the
  // model's <s> and </s> keep their ids.
  EXPECT_EQ(tok.vocab_size(), 405);
  EXPECT_EQ(tok.end_of_document(), 402);
  EXPECT_EQ(tok.pad(), 404);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  ASSERT_EQ(tok.special_tokens().size(), 7u);
  EXPECT_EQ(tok.special_tokens()[4].first, "<PAD>");
  EXPECT_EQ(tok.special_tokens()[5].first, "<s>");
  // The special tokens' texts are their ids; the stretches between are encoded on their own.
  const SentencePieceTokenizer plain(trained_model(), SentencePieceTokenizer::Kind::kLlama2);
  std::vector<int64_t> want = plain.encode("the fox");
  want.push_back(402);
  for (const int64_t id : plain.encode("jumps")) want.push_back(id);
  want.push_back(1);
  EXPECT_EQ(tok.encode("the fox<EOD>jumps<s>"), want);
  EXPECT_EQ(tok.encode_document("the fox<EOD>jumps<s>"), want);
  // Megatron's detokenize: " <text> " around each special id.
  EXPECT_EQ(tok.decode(want), "the fox <EOD> jumps <s> ");
}

TEST(SentencePieceTokenizer, MakeTokenizerTakesMegatronsNames) {
  const std::string folder = std::filesystem::path(trained_model()).parent_path().string();
  const auto llama2 = make_tokenizer("Llama2Tokenizer", folder);  // a folder holding the file
  EXPECT_EQ(llama2->vocab_size(), 400);
  EXPECT_EQ(make_tokenizer("SentencePieceTokenizer", trained_model())->vocab_size(), 405);
  EXPECT_THROW(make_tokenizer("Llama2Tokenizer", ""), Error);
}

TEST(SentencePieceTokenizer, BadFilesAndIdsAreErrorsNamingThem) {
  const auto dir = testing::fresh_folder("spm_bad");
  const std::string garbage = (dir / "tokenizer.model").string();
  std::ofstream(garbage) << "this is not a protobuf";
  for (const std::string& path : {garbage, (dir / "missing.model").string()}) {
    try {
      SentencePieceTokenizer tok(path, SentencePieceTokenizer::Kind::kLlama2);
      ADD_FAILURE() << "accepted " << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  const SentencePieceTokenizer tok(trained_model(), SentencePieceTokenizer::Kind::kSentencePiece);
  try {
    tok.decode({5, 999});
    ADD_FAILURE() << "decoded 999";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the id 999 at position 1"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(tok.encode("bad \xC3\x28 utf-8"), Error);
}

// ---- the few MB of tests/data/check_tokenizers_with_python.py --------------------------------

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

TEST(SentencePiecePython, MatchesSentencePieceOnMegabytes) {
  const char* dir = std::getenv("MOE_TOKENIZERS_PY_DIR");
  if (dir == nullptr) GTEST_SKIP() << "set by tests/data/check_tokenizers_with_python.py";
  const json texts = read_json(std::string(dir) + "/texts.json");
  const json models = read_json(std::string(dir) + "/sentencepiece.json");
  ASSERT_FALSE(models.empty());
  for (const json& model : models) {
    const std::string folder = std::string(dir) + "/" + model.get<std::string>();
    const json expected = read_json(folder + "/expected.json");
    for (const auto& [name, kind] :
         {std::pair{"SentencePieceTokenizer", SentencePieceTokenizer::Kind::kSentencePiece},
          std::pair{"Llama2Tokenizer", SentencePieceTokenizer::Kind::kLlama2}}) {
      SCOPED_TRACE(model.get<std::string>() + " as " + name);
      const SentencePieceTokenizer tok(folder, kind);
      const json& e = expected[name];
      int failures = 0;
      for (size_t i = 0; i < texts.size(); ++i) {
        const auto want = e["encode"][i].get<std::vector<int64_t>>();
        if (tok.encode(texts[i].get<std::string>()) != want && ++failures <= 5)
          ADD_FAILURE() << "text " << i << ": " << texts[i].get<std::string>().substr(0, 80);
      }
      EXPECT_EQ(failures, 0);
      for (size_t i = 0; i < e["encode_document"].size(); ++i)
        EXPECT_EQ(tok.encode_document(texts[i].get<std::string>()),
                  e["encode_document"][i].get<std::vector<int64_t>>())
            << "document " << i;
      for (const json& c : e["decode"])
        EXPECT_EQ(tok.decode(c["ids"].get<std::vector<int64_t>>()), c["text"].get<std::string>())
            << c["ids"].dump();
      EXPECT_EQ(tok.vocab_size(), e["vocab_size"].get<int64_t>());
      EXPECT_EQ(tok.end_of_document(), e["eod"].get<int64_t>());
      EXPECT_EQ(tok.bos(), e["bos"].get<int64_t>());
      EXPECT_EQ(tok.eos(), e["eos"].get<int64_t>());
      EXPECT_EQ(tok.pad(), e["pad"].get<int64_t>());
    }
  }
}

}  // namespace
}  // namespace moe::data
