// `moe forward`: logits and next-token loss of a model folder on token ids
// (checkpoint/forward_eval.h).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace moe::app {

struct ForwardCommandOptions {
  std::string model, tokens, out;
  std::string dtype;  // empty: f32 on the CPU, bf16 on a GPU
  bool cpu = false;
};

CLI::App* add_forward_command(CLI::App& app, ForwardCommandOptions& options);
int run_forward(const ForwardCommandOptions& options, bool force_cpu);

}  // namespace moe::app
