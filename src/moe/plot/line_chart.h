// A line chart of one or more series against a shared x axis (`moe plot`'s loss curve): axis
// ranges from the data, nice ticks with gridlines, the title and a legend above the plot area,
// axis labels below and to the left. Non-finite y values (a skipped log point's loss) break the
// line. Rendering is deterministic: the same series give the same pixels.
#pragma once

#include <string>
#include <vector>

#include "moe/plot/chart_axis.h"
#include "moe/plot/png_image.h"

namespace moe::plot {

struct Series {
  std::string name;       // the legend entry
  std::vector<double> x;  // same length as y
  std::vector<double> y;  // NaN / Inf: no value at this x (the line breaks)
  Rgb colour{0, 90, 200};
  bool markers = false;  // a 5 x 5 square at each point (sparse series such as validation)
};

struct LineChartOptions {
  int width = 960;
  int height = 600;
  std::string title;
  std::string x_label = "iteration";
  std::string y_label;
  int text_scale = 2;      // font pixels per glyph pixel
  int line_thickness = 2;  // pixels
  bool integer_x = true;   // x ticks at whole numbers only (iterations)
};

struct LineChart {
  RgbImage image;
  PlotArea area;  // where the data was drawn
};

// The x range is [min x, max x] over all series' finite points; the y range is the finite
// y values' [min, max] widened by 5% of the span each side (a flat series: +-5% of its value,
// or +-1 at 0). Throws moe::Error when no series holds a finite point, or x and y differ in
// length.
LineChart render_line_chart(const std::vector<Series>& series, const LineChartOptions& options);

}  // namespace moe::plot
