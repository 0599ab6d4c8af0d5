// Axis ticks for `moe plot`'s charts: "nice" steps (1, 2, 2.5 or 5 times a power of ten) so tick
// labels are short round numbers, and labels printed with just the decimals the step needs.
// Also the chart's pixel mapping and axis labels, shared by the line chart and the heatmap.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "moe/plot/png_image.h"

namespace moe::plot {

// The smallest step of the form {1, 2, 2.5, 5} x 10^k that is >= raw_step (> 0).
double nice_step(double raw_step);

// Ticks m * step inside [lo, hi] (both ends included when they fall on a multiple), with the
// smallest nice step that gives at most max_ticks of them (so as many as fit; a range much
// narrower than its magnitude may still get only one). lo == hi gives {lo}. Non-finite bounds or
// lo > hi throw moe::Error.
std::vector<double> nice_ticks(double lo, double hi, int max_ticks);
// The same with integer steps only (1, 2, 5, 10, 20, 25, ...): iterations, expert indices.
std::vector<double> integer_ticks(double lo, double hi, int max_ticks);

// A tick label: enough decimals to tell ticks `step` apart (none for integer steps), "0" for
// zero (never "-0.0"); magnitudes >= 1e6, or steps below 1e-4, in %g form with the digits needed.
std::string format_tick(double value, double step);

// The data-to-pixel mapping of a chart's plot area. Pixels [left, right) x [top, bottom);
// x_min maps to the left edge of column `left`, x_max to the right edge of column right - 1;
// y_max to the top edge, y_min to the bottom edge (pixel y grows downwards).
struct PlotArea {
  int left = 0, top = 0, right = 0, bottom = 0;
  double x_min = 0.0, x_max = 1.0, y_min = 0.0, y_max = 1.0;

  int width() const { return right - left; }
  int height() const { return bottom - top; }
  // Continuous pixel coordinates; a pixel index is floor() of them.
  double x_to_pixel(double x) const;
  double y_to_pixel(double y) const;
  // The data value at the centre of pixel column px / row py.
  double pixel_to_x(int px) const;
  double pixel_to_y(int py) const;
};

// The axis labels of a chart laid out by its `gap` (pixels between elements), `line_h` (one
// text line's height) and text `scale`: the x label centred below the plot area, under the tick
// labels (which take a gap, a line and a gap); the y label read bottom to top, centred on the
// plot area's height, `2 gap` from the image's left edge. An empty label draws nothing.
void draw_axis_labels(RgbImage& img, const PlotArea& area, std::string_view x_label,
                      std::string_view y_label, int gap, int line_h, int scale);

}  // namespace moe::plot
