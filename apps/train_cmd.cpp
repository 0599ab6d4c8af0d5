#include "train_cmd.h"

#include <algorithm>
#include <cstdio>

#include "moe/train/exit_signal.h"
#include "moe/train/interrupt_report.h"
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
  // SIGINT / SIGTERM: say what was interrupted and what was saved, exit 128 + signo; with
  // --exit-signal-handler the first one ends the run after the iteration in progress (with a
  // save), the report stays for a second one.
  train::install_interrupt_report();
  if (config.exit_signal_handler) train::install_exit_signal_handler();
  // Checkpoints and the text sample after training (train_run.h's hook points). The default
  // run (no flags) replaces its own earlier checkpoint; other runs never write over one.
  train::StandardHookOptions hooks;
  hooks.replace_earlier_saves = args.empty();
  train::run_training(config, train::standard_train_hooks(hooks), stdout);
  return 0;
}

}  // namespace moe::app
