// The bad-input sweep of token id inputs (docs/bad-input.md): the ids file of `moe forward
// --tokens` ([[id, ...], ...] JSON), ids given to the tokenizers' decode (what `moe generate`
// prints), prompts given to generate() (ids from a tokenizer or a caller), and prompt texts
// with invalid UTF-8 given to encode. Ids are negative, past the vocabulary, 2^31, 2^62,
// INT64_MIN / MAX; rows are ragged, empty, nested or not integers.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "common/check.h"
#include "fuzz/sweep.h"
#include "moe/checkpoint/forward_eval.h"
#include "moe/data/byte_tokenizer.h"
#include "moe/data/hf_bpe_tokenizer.h"
#include "moe/train/generate.h"
#include "nn/gpt_test_util.h"

namespace moe {
namespace {

using sweep::Mutant;

const std::vector<int64_t>& interesting_ids(int64_t vocab) {
  static std::vector<int64_t> ids;
  ids = {0,
         1,
         -1,
         vocab - 1,
         vocab,
         vocab + 1,
         255,
         256,
         257,
         int64_t{1} << 31,
         int64_t{1} << 62,
         std::numeric_limits<int64_t>::max(),
         std::numeric_limits<int64_t>::min()};
  return ids;
}

std::vector<int64_t> random_ids(sweep::Rng& rng, int64_t vocab) {
  std::vector<int64_t> ids(rng.below(12) + (rng.percent(10) ? 0 : 1));
  for (int64_t& id : ids)
    id = rng.percent(70) ? static_cast<int64_t>(rng.below(static_cast<size_t>(vocab)))
                         : rng.pick(interesting_ids(vocab));
  return ids;
}

std::string show(const std::vector<int64_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + "]";
}

TEST(TokenIdsSweep, ForwardTokensJson) {
  sweep::ScratchDir dir;
  const std::string path = dir.path("ids.json");
  const std::string valid = "[[1, 2, 3, 4], [5, 6, 7, 300]]";
  const int64_t vocab = 301;
  sweep::Sweep sweep("moe forward --tokens");
  const auto run = [&](const Mutant& m) {
    sweep::write_file(path, m.bytes);
    return sweep.check(m, {"ids.json"}, [&] {
      const Tensor ids = checkpoint::read_token_batch(path, vocab);
      (void)ids.to_vector<int64_t>();
    });
  };
  EXPECT_TRUE(run({"unchanged", valid, ""}));
  for (const Mutant& m : sweep::json_document_cases(valid)) run(m);
  for (const Mutant& m : sweep::truncations(valid)) run(m);
  for (const int64_t id : interesting_ids(vocab))
    run({"id " + std::to_string(id), "[[1, " + std::to_string(id) + "]]", ""});
  for (const char* text : {"[[]]", "[[1], []]", "[[1, 2], [3]]", "[[[1]]]", "[[1.0, 2]]", "[[1.5]]",
                           "[[\"1\"]]", "[[true]]", "[[null]]", "[1, 2]",
                           "[[18446744073709551615]]", "[[1e30]]", "{\"ids\": [[1]]}"})
    run({text, text, ""});
  {
    std::string wide = "[[1";
    for (int i = 0; i < 200000; ++i) wide += ",2";
    run({"one row of 200001 ids", wide + "]]", ""});
  }
  for (const uint64_t i : sweep::random_cases(200)) {
    run(sweep::random_mutant("forward tokens", i,
                             [&](sweep::Rng& rng) { return sweep::mutate_json(valid, rng, {}); }));
  }
  EXPECT_GT(sweep.refused(), 0);
}

TEST(TokenIdsSweep, DecodeAndEncode) {
  const auto gpt2 = data::HfBpeTokenizer::from_file(test::fixture_path("tokenizers/gpt2"));
  sweep::Sweep sweep("tokenizer decode / encode");
  for (const uint64_t i : sweep::random_cases(300)) {
    sweep::Rng rng(sweep::case_seed(sweep::base_seed(), "decode ids", i));
    const std::vector<int64_t> ids = random_ids(rng, gpt2->vocab_size());
    const std::vector<int64_t> bytes = random_ids(rng, data::ByteTokenizer::kVocabSize);
    std::string text = "hello w\xc3\xb6rld <|endoftext|>";
    if (rng.percent(60)) {
      const std::string& bad = rng.pick(sweep::invalid_utf8());
      text.insert(rng.below(text.size() + 1), bad);
    }
    const std::string what =
        "random case " + std::to_string(i) + " (MOE_SWEEP_CASE=" + std::to_string(i) + "): ";
    sweep.check({what + "HF decode " + show(ids), "", ""}, {"tokenizer.json"},
                [&] { (void)gpt2->decode(ids, rng.percent(50)); });
    sweep.check({what + "byte decode " + show(bytes), "", ""}, {"byte tokenizer"},
                [&] { (void)data::ByteTokenizer::decode(bytes); });
    sweep.check({what + "HF encode '" + sweep::excerpt(text) + "'", "", ""}, {"tokenizer.json"},
                [&] { (void)gpt2->encode(text, true); });
  }
  EXPECT_GT(sweep.refused(), 0);
}

TEST(TokenIdsSweep, GeneratePrompts) {
  nn::ModelConfig config = test::tiny_gpt_config(DType::f32);
  nn::GPTModel model(config, DType::f32, Device::cpu(), 7);
  train::GenerateOptions options;
  options.max_new_tokens = 1;
  sweep::Sweep sweep("generate prompt ids");
  for (const uint64_t i : sweep::random_cases(150)) {
    sweep::Rng rng(sweep::case_seed(sweep::base_seed(), "generate prompt", i));
    const std::vector<int64_t> prompt = random_ids(rng, config.vocab_size);
    train::GenerateOptions o = options;
    if (rng.percent(20)) o.end_of_document_id = rng.pick(interesting_ids(config.vocab_size));
    if (rng.percent(20)) o.sampled_vocab_size = rng.pick(interesting_ids(config.vocab_size));
    if (rng.percent(20))
      o.max_sequence_length = rng.pick(interesting_ids(config.max_position_embeddings));
    sweep.check({"random case " + std::to_string(i) + ": prompt " + show(prompt), "", ""},
                {"generate"}, [&] { (void)train::generate(model, prompt, o); });
  }
  EXPECT_GT(sweep.refused(), 0);
  EXPECT_GT(sweep.accepted(), 0);
}

}  // namespace
}  // namespace moe
