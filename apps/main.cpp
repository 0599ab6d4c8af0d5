// The `moe` program: one binary, Megatron's flag names, subcommands.
#include <CLI/CLI.hpp>

#include <iostream>

#include "moe/core/device.h"
#include "moe/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"moecore: train Mixture-of-Experts language models"};
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::cout << "moecore: CUDA " << (moe::cuda_built() ? "built" : "not built") << ", "
            << moe::cuda_device_count() << " device(s)\n";
  return 0;
}
