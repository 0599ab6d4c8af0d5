// `moe info`: a model's config and parameter counts (checkpoint/model_info.h).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace moe::app {

struct InfoCommandOptions {
  std::string model;
};

CLI::App* add_info_command(CLI::App& app, InfoCommandOptions& options);
int run_info(const InfoCommandOptions& options);

}  // namespace moe::app
