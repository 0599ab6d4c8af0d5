#include "moe/plot/training_plots.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include "moe/core/error.h"
#include "moe/plot/line_chart.h"
#include "moe/plot/png_image.h"

namespace moe::plot {
namespace {

constexpr Rgb kTrainColour{0, 90, 200};
constexpr Rgb kValidColour{230, 110, 0};

std::vector<double> as_doubles(const std::vector<int64_t>& v) {
  return {v.begin(), v.end()};
}

bool any_finite(const std::vector<double>& v) {
  for (double x : v)
    if (std::isfinite(x)) return true;
  return false;
}

}  // namespace

HeatmapData expert_load_heatmap(const LayerExpertLoads& loads) {
  HeatmapData d;
  MOE_CHECK(!loads.points.empty(), "layer ", loads.layer, " has no expert loads");
  d.rows = static_cast<int64_t>(loads.points.front().tokens.size());
  for (const ExpertLoadPoint& p : loads.points) {
    MOE_CHECK(static_cast<int64_t>(p.tokens.size()) == d.rows, "layer ", loads.layer,
              ": iteration ", p.iteration, " has ", p.tokens.size(), " experts, not ", d.rows);
    d.iterations.push_back(p.iteration);
    double total = 0.0;
    for (double n : p.tokens) total += n;
    const double mean = total / static_cast<double>(d.rows);
    for (double n : p.tokens)
      d.values.push_back(mean > 0.0 ? n / mean : std::numeric_limits<double>::quiet_NaN());
  }
  return d;
}

std::vector<std::string> write_training_plots(const TrainingMetrics& m, const std::string& out_dir,
                                              const PlotOptions& o) {
  MOE_CHECK(o.loss || o.expert_load, "no plot requested");
  MOE_CHECK(!m.iterations.empty(), "metrics file ", m.source,
            " holds no training log points (is it the JSONL of `moe train --log-interval ...`?)");
  if (o.loss)
    MOE_CHECK(any_finite(m.lm_loss), "metrics file ", m.source,
              ": every lm loss is null (no update was taken), nothing to plot");
  if (o.expert_load)
    MOE_CHECK(
        !m.expert_loads.empty(), "metrics file ", m.source, " has no per-expert token counts ",
        m.has_moe_layers ? "(its \"moe_layers\" entries were written without \"expert_tokens\")"
                         : "(no \"moe_layers\" entries)",
        ": train with --moe-per-layer-logging for the expert-load heatmaps, or plot only "
        "the loss (moe plot --plots loss)");

  std::filesystem::create_directories(out_dir);
  const std::filesystem::path dir(out_dir);
  std::vector<std::string> written;
  if (o.loss) {
    std::vector<Series> series;
    series.push_back(Series{"lm loss", as_doubles(m.iterations), m.lm_loss, kTrainColour, false});
    if (any_finite(m.valid_lm_loss))
      series.push_back(Series{"validation lm loss", as_doubles(m.valid_iterations), m.valid_lm_loss,
                              kValidColour, true});
    LineChartOptions chart;
    chart.width = o.width;
    chart.title = "lm loss";
    chart.y_label = "loss";
    const std::string path = (dir / "loss.png").string();
    write_png(render_line_chart(series, chart).image, path);
    written.push_back(path);
  }
  if (o.expert_load) {
    for (const LayerExpertLoads& layer : m.expert_loads) {
      HeatmapOptions options;
      options.width = o.width;
      options.title = "expert load, layer " + std::to_string(layer.layer);
      const std::string path =
          (dir / ("expert_load_layer_" + std::to_string(layer.layer) + ".png")).string();
      write_png(render_heatmap(expert_load_heatmap(layer), options).image, path);
      written.push_back(path);
    }
  }
  return written;
}

}  // namespace moe::plot
