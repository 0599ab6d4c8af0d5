// `moe plot`: a training run's metrics (the JSONL file of `moe train`) as PNG charts, the two a
// Megatron user reads in TensorBoard for an MoE run:
//   OUT/loss.png                     lm loss against iteration, validation lm loss as a second
//                                    series (with markers) when the file has evaluations
//   OUT/expert_load_layer_<N>.png    per MoE layer N: experts x log points, colour = tokens
//                                    routed to the expert / mean tokens per expert over that log
//                                    interval (plot/heatmap.h); needs a run with
//                                    --moe-per-layer-logging
// One PNG per layer keeps each readable at any layer count (DeepSeek-V3 has 58 MoE layers).
#pragma once

#include <string>
#include <vector>

#include "moe/plot/heatmap.h"
#include "moe/plot/metrics_reader.h"

namespace moe::plot {

struct PlotOptions {
  bool loss = true;         // loss.png
  bool expert_load = true;  // expert_load_layer_<N>.png
  int width = 1000;         // pixels, both charts
};

// The heatmap data of one layer: values[k][e] = n_e / mean_e n_e at log point k (NaN when the
// interval routed no tokens).
HeatmapData expert_load_heatmap(const LayerExpertLoads& loads);

// Writes the requested charts into out_dir (created if missing) and returns their paths, loss
// first, then the layers in order. Everything is checked before anything is written: no
// training log point, no finite loss (for loss.png), or no per-expert counts (for the
// heatmaps; the message says to train with --moe-per-layer-logging) throw moe::Error naming the
// metrics file.
std::vector<std::string> write_training_plots(const TrainingMetrics& metrics,
                                              const std::string& out_dir,
                                              const PlotOptions& options);

}  // namespace moe::plot
