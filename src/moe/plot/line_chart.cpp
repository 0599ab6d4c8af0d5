#include "moe/plot/line_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "moe/core/error.h"
#include "moe/plot/bitmap_font.h"

namespace moe::plot {
namespace {

constexpr Rgb kGrid{225, 225, 225};
constexpr Rgb kAxisText{40, 40, 40};

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) { lo = std::min(lo, v), hi = std::max(hi, v); }
  bool empty() const { return lo > hi; }
};

// Widens a y range by 5% of its span each side, so the curve does not run along the frame.
Range padded(Range r) {
  double pad = 0.05 * (r.hi - r.lo);
  if (pad == 0.0) pad = r.lo == 0.0 ? 1.0 : 0.05 * std::abs(r.lo);
  return {r.lo - pad, r.hi + pad};
}

double tick_step(const std::vector<double>& ticks) {
  return ticks.size() >= 2 ? ticks[1] - ticks[0] : 1.0;
}

}  // namespace

LineChart render_line_chart(const std::vector<Series>& series, const LineChartOptions& o) {
  Range xr, yr;
  for (const Series& s : series) {
    MOE_CHECK(s.x.size() == s.y.size(), "line chart series '", s.name, "' has ", s.x.size(),
              " x values but ", s.y.size(), " y values");
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) xr.add(s.x[i]), yr.add(s.y[i]);
  }
  MOE_CHECK(!xr.empty(), "line chart '", o.title, "': no series holds a finite point");
  if (xr.lo == xr.hi) xr.lo -= 0.5, xr.hi += 0.5;  // one x: centre it
  yr = padded(yr);

  const int scale = std::max(o.text_scale, 1);
  const int line_h = text_height(scale);
  const int gap = 4 * scale;

  // The y tick labels decide the left margin, so compute them first.
  const int top = gap * 2 + line_h + gap * 2;                             // title row
  const int bottom = o.height - (gap + line_h + gap + line_h + gap * 2);  // tick labels, x label
  MOE_CHECK(bottom - top > 40, "line chart height ", o.height, " leaves no room to plot");
  const std::vector<double> y_ticks =
      nice_ticks(yr.lo, yr.hi, std::clamp((bottom - top) / (line_h * 3), 2, 10));
  std::vector<std::string> y_labels;
  int y_label_width = 0;
  for (double t : y_ticks) {
    y_labels.push_back(format_tick(t, tick_step(y_ticks)));
    y_label_width = std::max(y_label_width, text_width(y_labels.back(), scale));
  }
  PlotArea area;
  area.left = gap * 2 + (o.y_label.empty() ? 0 : line_h + gap * 2) + y_label_width + gap;
  area.right = o.width - gap * 4;
  area.top = top;
  area.bottom = bottom;
  area.x_min = xr.lo, area.x_max = xr.hi;
  area.y_min = yr.lo, area.y_max = yr.hi;
  MOE_CHECK(area.width() > 40, "line chart width ", o.width, " leaves no room to plot");

  LineChart chart{RgbImage(o.width, o.height), area};
  RgbImage& img = chart.image;

  // Gridlines and tick labels.
  for (size_t i = 0; i < y_ticks.size(); ++i) {
    const int py = std::clamp(static_cast<int>(std::floor(area.y_to_pixel(y_ticks[i]))), area.top,
                              area.bottom - 1);
    img.fill_rect(area.left, py, area.right, py + 1, kGrid);
    draw_text(img, area.left - gap - text_width(y_labels[i], scale), py - line_h / 2, y_labels[i],
              kAxisText, scale);
  }
  // x tick labels are wider than tall: leave about 3 label widths per tick.
  const int x_label_guess = text_width(format_tick(xr.hi, 1.0), scale) + 2 * text_width("0", scale);
  const std::vector<double> x_ticks = (o.integer_x ? integer_ticks : nice_ticks)(
      xr.lo, xr.hi, std::clamp(area.width() / (x_label_guess * 2), 2, 12));
  for (double t : x_ticks) {
    const int px =
        std::clamp(static_cast<int>(std::floor(area.x_to_pixel(t))), area.left, area.right - 1);
    img.fill_rect(px, area.top, px + 1, area.bottom, kGrid);
    const std::string label = format_tick(t, tick_step(x_ticks));
    draw_text(img, px - text_width(label, scale) / 2, area.bottom + gap, label, kAxisText, scale);
  }

  // The series, clipped to the plot area: drawn on a canvas the size of the area, then copied.
  RgbImage plot(area.width(), area.height(), kWhite);
  for (int y = 0; y < plot.height(); ++y)
    for (int x = 0; x < plot.width(); ++x) plot.set(x, y, img.at(area.left + x, area.top + y));
  for (const Series& s : series) {
    auto pixel = [&](size_t i) {
      return std::pair{static_cast<int>(std::floor(area.x_to_pixel(s.x[i]))) - area.left,
                       static_cast<int>(std::floor(area.y_to_pixel(s.y[i]))) - area.top};
    };
    bool have_previous = false;
    std::pair<int, int> previous;
    int finite_points = 0;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
        have_previous = false;  // a gap in the line
        continue;
      }
      ++finite_points;
      // The top and right data edges map to one past the last pixel: pull them in.
      auto p = pixel(i);
      p.first = std::clamp(p.first, 0, plot.width() - 1);
      p.second = std::clamp(p.second, 0, plot.height() - 1);
      if (have_previous)
        plot.draw_line(previous.first, previous.second, p.first, p.second, s.colour,
                       o.line_thickness);
      previous = p;
      have_previous = true;
    }
    if (s.markers || finite_points == 1)
      for (size_t i = 0; i < s.x.size(); ++i) {
        if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
        auto p = pixel(i);
        p.first = std::clamp(p.first, 0, plot.width() - 1);
        p.second = std::clamp(p.second, 0, plot.height() - 1);
        plot.fill_rect(p.first - 2, p.second - 2, p.first + 3, p.second + 3, s.colour);
      }
  }
  for (int y = 0; y < plot.height(); ++y)
    for (int x = 0; x < plot.width(); ++x) img.set(area.left + x, area.top + y, plot.at(x, y));
  img.draw_rect(area.left - 1, area.top - 1, area.right + 1, area.bottom + 1, kBlack);

  // Title (left) and legend (right) above the plot area; axis labels.
  draw_text(img, area.left, gap * 2, o.title, kBlack, scale);
  int legend_x = area.right;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    legend_x -= text_width(it->name, scale);
    draw_text(img, legend_x, gap * 2, it->name, kAxisText, scale);
    legend_x -= gap + 6 * scale;
    const int mid = gap * 2 + line_h / 2;
    img.fill_rect(legend_x, mid - scale, legend_x + 6 * scale, mid + scale, it->colour);
    if (it->markers)
      img.fill_rect(legend_x + 3 * scale - 2, mid - 2, legend_x + 3 * scale + 3, mid + 3,
                    it->colour);
    legend_x -= gap * 4;
  }
  draw_axis_labels(img, area, o.x_label, o.y_label, gap, line_h, scale);
  return chart;
}

}  // namespace moe::plot
