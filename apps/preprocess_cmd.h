// `moe preprocess`: Megatron's tools/preprocess_data.py: JSONL or plain-text documents ->
// token ids -> <output-prefix>_<key>_document.bin/.idx (data/preprocess.h), and with
// --merge, Megatron's tools/merge_datasets.py (data/indexed_dataset_writer.h).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "moe/data/preprocess.h"

namespace moe::app {

struct PreprocessCommandOptions {
  data::PreprocessOptions preprocess;
  std::string tokenizer_type;      // --tokenizer-type (empty + no model: byte)
  std::string tokenizer_model;     // --tokenizer-model
  std::vector<std::string> merge;  // --merge PREFIX...: merge these datasets instead
};

CLI::App* add_preprocess_command(CLI::App& app, PreprocessCommandOptions& options);
int run_preprocess(const PreprocessCommandOptions& options);

}  // namespace moe::app
