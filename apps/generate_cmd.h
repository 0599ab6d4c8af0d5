// `moe generate`: continuations of one or several prompts (a batch: --prompt repeated, or
// --prompts-file with one prompt a line) from a model folder (a Hugging Face folder, `moe
// convert` output) or a training save folder, with the folder's tokenizer.json (or
// --tokenizer-*, or byte tokens) and a KV cache (train/generate.h, nn/kv_cache.h).
// Sampling defaults: a flag given, else the folder's generation_config.json (do_sample,
// temperature, top_k, top_p, max_new_tokens, eos_token_id: one id or a list; do_sample false or
// absent is greedy, as in transformers), else the built-in defaults (temperature 1, top-k 0,
// top-p 1, 200 tokens). Prints each continuation and the prefill / decode times and tokens/s.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moe/train/generate.h"

namespace moe::app {

struct GenerateCommandOptions {
  std::string load;  // model folder, or a --save folder (latest_checkpointed_iteration.txt)
  std::vector<std::string> prompts;  // none: one empty prompt (a new document)
  std::string prompts_file;          // one prompt a line, after the --prompt ones
  std::string dtype;   // empty: f32 on the CPU, bf16 on a GPU
  std::string tokenizer_type, tokenizer_model;  // empty: the folder's tokenizer.json, else bytes
  train::GenerateOptions generate;  // seed, --seq-length, kv_cache; the rest below
  // Unset: generation_config.json's value, else the built-in default.
  std::optional<double> temperature, top_p;
  std::optional<int64_t> top_k, max_new_tokens;
  bool no_kv_cache = false;
  bool cpu = false;
};

CLI::App* add_generate_command(CLI::App& app, GenerateCommandOptions& options);
int run_generate(const GenerateCommandOptions& options, bool force_cpu);

}  // namespace moe::app
