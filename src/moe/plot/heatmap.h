// The experts-by-steps load heatmap of one MoE layer (`moe plot`): x = iteration (each log point
// is a column spanning the iterations its counts were summed over), y = expert index (expert 0
// at the top), colour = relative load n_e / mean_e n_e of that log interval, with a colour bar.
//
// The colour map is diverging around the balanced load 1: 0 (an expert that received nothing)
// is blue, 1 is white, v_max = max(2, largest value) is red, linear in RGB on each side. So a
// balanced layer is a white picture, and hot or starved experts stand out as red or blue rows.
// Cells without data (no tokens in that interval) are grey.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/plot/chart_axis.h"
#include "moe/plot/png_image.h"

namespace moe::plot {

inline constexpr Rgb kLoadLow{30, 70, 170};         // relative load 0
inline constexpr Rgb kLoadBalanced{255, 255, 255};  // relative load 1
inline constexpr Rgb kLoadHigh{180, 20, 30};        // relative load v_max
inline constexpr Rgb kNoData{190, 190, 190};

// The colour of relative load `value` on a map ending at v_max (> 1); values are clamped to
// [0, v_max]; NaN gives kNoData.
Rgb load_colour(double value, double v_max);

struct HeatmapData {
  std::vector<int64_t> iterations;  // the log points, increasing: column k ends at iterations[k]
  int64_t rows = 0;                 // experts
  std::vector<double> values;       // [column][row] row-major by column: values[k * rows + e]
};

struct HeatmapOptions {
  std::string title;
  std::string x_label = "iteration";
  std::string y_label = "expert";
  std::string colour_bar_label = "tokens / mean";
  int width = 1000;
  int plot_height = 0;  // 0: from the rows, clamp(8 * rows, 240, 1024)
  int text_scale = 2;
};

struct Heatmap {
  RgbImage image;
  PlotArea area;  // x in iterations; y_min = 0, y_max = rows, but drawn top down (expert 0 on top)
  double v_max = 2.0;                 // the colour map's top
  std::vector<int64_t> iterations;    // the columns' ends
  std::vector<double> column_starts;  // column k spans (column_starts[k], iterations[k]]
  int64_t rows = 0;

  // The pixel column at the middle of column k's span, and the pixel row at the middle of
  // expert e's band.
  int column_pixel(size_t k) const;
  int row_pixel(int64_t e) const;
};

// Column k spans (iterations[k-1], iterations[k]]; the first spans back as far as the next one
// (or to 0). Each pixel takes the cell under its centre, so more columns or rows than pixels are
// sampled. Throws moe::Error for no columns, no rows, a size mismatch or iterations that do not
// increase.
Heatmap render_heatmap(const HeatmapData& data, const HeatmapOptions& options);

}  // namespace moe::plot
