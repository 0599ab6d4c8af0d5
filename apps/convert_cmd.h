// `moe convert`: Hugging Face <-> moecore model folders (checkpoint/checkpoint_convert.h).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace moe::app {

struct ConvertCommandOptions {
  std::string from, to, src, dst;
  std::string dtype = "bf16";
  bool keep_fp8 = false;
  bool force = false;
  std::string max_shard_size = "5GB";
};

CLI::App* add_convert_command(CLI::App& app, ConvertCommandOptions& options);
int run_convert(const ConvertCommandOptions& options);

}  // namespace moe::app
