// `moe train`: Megatron-LM's training flags (src/moe/train/train_args.h) -> a run on one device
// (src/moe/train/train_run.h). With no flags, the default run: a tiny byte-level MoE on the
// built-in corpus (Debian's fortunes).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace moe::app {

struct TrainCommandOptions {
  std::vector<std::string> args;  // filled after parsing: everything after `train`
};

// Adds the `train` subcommand. Its flags are parsed by train_args.h (one table), not by CLI11:
// the subcommand passes every argument through.
CLI::App* add_train_command(CLI::App& app, TrainCommandOptions& options);
int run_train(CLI::App& cmd, bool force_cpu);

}  // namespace moe::app
