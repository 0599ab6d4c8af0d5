#include "info_cmd.h"

#include <cstdio>

#include "moe/checkpoint/model_info.h"
#include "moe/nn/model_zoo.h"

namespace moe::app {

CLI::App* add_info_command(CLI::App& app, InfoCommandOptions& o) {
  std::string names;
  for (const std::string& n : nn::model_zoo_names()) names += (names.empty() ? "" : ", ") + n;
  CLI::App* cmd = app.add_subcommand(
      "info", "a model's config and parameter counts (total and active per token)");
  cmd->add_option("--model", o.model, "a model folder (Hugging Face or moecore) or a zoo name: " + names)
      ->required();
  return cmd;
}

int run_info(const InfoCommandOptions& o) {
  std::printf("%s", checkpoint::model_info(o.model).c_str());
  return 0;
}

}  // namespace moe::app
