// `moe generate`: a text sample from a model folder or a training save folder, with the
// byte-level tokenizer (train/generate.h, data/byte_tokenizer.h).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "moe/train/generate.h"

namespace moe::app {

struct GenerateCommandOptions {
  std::string load;    // model folder, or a --save folder (latest_checkpointed_iteration.txt)
  std::string prompt;  // empty: start a new document
  std::string dtype;   // empty: f32 on the CPU, bf16 on a GPU
  std::string tokenizer_type, tokenizer_model;  // empty: the folder's tokenizer.json, else bytes
  train::GenerateOptions generate;
  bool cpu = false;
};

CLI::App* add_generate_command(CLI::App& app, GenerateCommandOptions& options);
int run_generate(const GenerateCommandOptions& options, bool force_cpu);

}  // namespace moe::app
