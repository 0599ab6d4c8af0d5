// `moe bench tokenizer`: single-thread encoding speed of a tokenizer (make_tokenizer:
// --tokenizer-type / --tokenizer-model, Megatron's flags) on a list of documents, in MB/s of
// UTF-8 input and tokens/s.
//
// Documents: --input as a JSON list of strings (.json; what tests/data/
// check_tokenizers_with_python.py writes, so Hugging Face's figure is on the same text), as
// JSON lines with a "text" key (.jsonl, Megatron's preprocess input), or any other file as one
// document; without --input, the entries of Debian's fortunes (data/builtin_corpus.h).
//
// Each pass encodes every document once, in order, on the calling thread. The first pass runs
// with the tokenizer's word cache empty (a fresh tokenizer: the cost a `moe preprocess` worker
// pays at its start); the figure reported is the median of the --iters passes after it (cache
// warm, as in a long run). It also reports for how many documents decode(encode(d)) == d (all of
// them unless the tokenizer normalizes; a sanity check, not a parity test).
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace moe::bench {

struct TokenizerBenchOptions {
  std::string tokenizer_type = "HuggingFaceTokenizer";
  // A tokenizer.json or a folder holding one; default: the Llama-3-style test fixture.
  std::string tokenizer_model = "tests/fixtures/tokenizers/llama3";
  std::string input;  // empty: the fortunes
  int iters = 5;
};

// Adds `tokenizer` to `bench` (the `moe bench` app) with --tokenizer-type, --tokenizer-model,
// --input, --iters, writing into `options` (which must outlive the parse).
CLI::App* add_tokenizer_bench_command(CLI::App& bench, TokenizerBenchOptions& options);

int run_tokenizer_bench(const TokenizerBenchOptions& options);

}  // namespace moe::bench
