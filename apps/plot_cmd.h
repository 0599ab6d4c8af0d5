// `moe plot`: a training run's JSONL metrics as PNG charts (plot/training_plots.h): the loss
// curve and one expert-load heatmap per MoE layer.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace moe::app {

struct PlotCommandOptions {
  std::string metrics;    // the JSONL file of `moe train`
  std::string out = ".";  // folder for the PNG files
  std::string plots = "loss,expert-load";
  int width = 1000;
};

CLI::App* add_plot_command(CLI::App& app, PlotCommandOptions& options);
int run_plot(const PlotCommandOptions& options);

}  // namespace moe::app
