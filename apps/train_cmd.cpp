#include "train_cmd.h"

#include <algorithm>
#include <cstdio>

#include "moe/train/train_args.h"
#include "moe/train/train_run.h"

namespace moe::app {

CLI::App* add_train_command(CLI::App& app, TrainCommandOptions&) {
  CLI::App* cmd = app.add_subcommand(
      "train",
      "train a model with Megatron-LM's flags (`moe train --help` lists them); no flags: the "
      "default run, a tiny byte-level MoE on the built-in corpus");
  cmd->allow_extras();   // every flag goes to train_args.h's table, unknown ones included
  cmd->set_help_flag();  // --help too: the table prints itself
  return cmd;
}

int run_train(CLI::App& cmd, bool force_cpu) {
  std::vector<std::string> args = cmd.remaining();
  if (std::find(args.begin(), args.end(), "--help") != args.end() ||
      std::find(args.begin(), args.end(), "-h") != args.end()) {
    std::printf("%s", train::train_flags_help().c_str());
    return 0;
  }
  train::TrainRunConfig config = train::parse_train_args(args);
  if (force_cpu) config.cpu = true;
  // Checkpoints and the text sample after training (train_run.h's hook points).
  train::run_training(config, train::standard_train_hooks(), stdout);
  return 0;
}

}  // namespace moe::app
