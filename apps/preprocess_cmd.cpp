#include "preprocess_cmd.h"

#include <cstdio>

#include "moe/core/error.h"
#include "moe/data/indexed_dataset_writer.h"
#include "moe/data/tokenizer.h"

namespace moe::app {

CLI::App* add_preprocess_command(CLI::App& app, PreprocessCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "preprocess",
      "tokenize JSONL or text documents into Megatron's indexed dataset "
      "(<output-prefix>_<key>_document.bin/.idx), or merge datasets with --merge");
  data::PreprocessOptions& p = o.preprocess;
  cmd->add_option("--input", p.inputs,
                  "input files, read in order: JSONL (one object per line) or plain text (one "
                  "document per line)");
  cmd->add_option("--input-format", p.input_format,
                  "auto (.jsonl/.json/.ndjson are JSONL, anything else text), jsonl or text")
      ->check(CLI::IsMember({"auto", "jsonl", "text"}));
  cmd->add_option("--json-keys", p.json_keys,
                  "JSON keys to tokenize, one dataset each (default text)");
  cmd->add_option("--output-prefix", p.output_prefix, "path of the outputs, without suffix")
      ->required();
  cmd->add_option("--tokenizer-type", o.tokenizer_type,
                  "byte (default), HuggingFaceTokenizer, SentencePieceTokenizer or "
                  "Llama2Tokenizer");
  cmd->add_option("--tokenizer-model", o.tokenizer_model,
                  "tokenizer.json or its folder (HuggingFaceTokenizer); tokenizer.model or its "
                  "folder (SentencePieceTokenizer, Llama2Tokenizer)");
  cmd->add_flag("--append-eod", p.append_eod, "append the end-of-document id to each document");
  // Checked by data::preprocess ("--workers must be at least 1"), not by a CLI11 range, whose
  // message prints the bounds as doubles.
  cmd->add_option("--workers", p.workers, "tokenizing threads (default 1)");
  cmd->add_option("--merge", o.merge,
                  "instead of tokenizing: merge these dataset prefixes, in order, into "
                  "--output-prefix (all of one dtype)");
  return cmd;
}

int run_preprocess(const PreprocessCommandOptions& o) {
  if (!o.merge.empty()) {
    MOE_CHECK(o.preprocess.inputs.empty(), "moe preprocess: give --input or --merge, not both");
    data::merge_indexed_datasets(o.merge, o.preprocess.output_prefix);
    const data::IndexedDataset merged(o.preprocess.output_prefix);
    std::printf("merged %zu datasets into %s: %lld documents, %lld sequences, %lld tokens (%s)\n",
                o.merge.size(), o.preprocess.output_prefix.c_str(),
                static_cast<long long>(merged.num_documents()),
                static_cast<long long>(merged.num_sequences()),
                static_cast<long long>(merged.num_tokens()),
                std::string(data::indexed_dtype_name(merged.dtype())).c_str());
    return 0;
  }
  MOE_CHECK(!o.preprocess.inputs.empty(), "moe preprocess: --input is required");
  const auto tokenizer = data::make_tokenizer(o.tokenizer_type, o.tokenizer_model);
  const data::PreprocessSummary s = data::preprocess(o.preprocess, *tokenizer, stderr);
  for (const std::string& prefix : s.output_prefixes) {
    std::printf("wrote %s.bin and %s.idx (%s tokens, tokenizer %s)\n", prefix.c_str(),
                prefix.c_str(), std::string(data::indexed_dtype_name(s.dtype)).c_str(),
                tokenizer->description().c_str());
  }
  return 0;
}

}  // namespace moe::app
