#include "plot_cmd.h"

#include <cstdio>
#include <sstream>

#include "moe/core/error.h"
#include "moe/plot/metrics_reader.h"
#include "moe/plot/training_plots.h"

namespace moe::app {

CLI::App* add_plot_command(CLI::App& app, PlotCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "plot",
      "a training run's metrics as PNG charts: OUT/loss.png (lm loss, validation loss) and "
      "OUT/expert_load_layer_<N>.png (tokens per expert / mean, per log interval)");
  cmd->add_option(
         "--metrics", o.metrics,
         "the JSONL metrics file of `moe train` (expert loads need --moe-per-layer-logging)")
      ->required();
  cmd->add_option("--out", o.out, "folder for the PNG files (created if missing)")
      ->capture_default_str();
  cmd->add_option("--plots", o.plots, "comma-separated: loss, expert-load")->capture_default_str();
  cmd->add_option("--width", o.width, "image width in pixels")
      ->check(CLI::Range(400, 8000))
      ->capture_default_str();
  return cmd;
}

int run_plot(const PlotCommandOptions& o) {
  plot::PlotOptions options;
  options.loss = options.expert_load = false;
  options.width = o.width;
  std::stringstream names(o.plots);
  for (std::string name; std::getline(names, name, ',');) {
    if (name == "loss")
      options.loss = true;
    else if (name == "expert-load")
      options.expert_load = true;
    else
      MOE_FAIL("--plots: unknown plot '", name, "' (choices: loss, expert-load)");
  }
  const plot::TrainingMetrics metrics = plot::read_metrics_jsonl(o.metrics);
  for (const std::string& path : plot::write_training_plots(metrics, o.out, options))
    std::printf("%s\n", path.c_str());
  return 0;
}

}  // namespace moe::app
