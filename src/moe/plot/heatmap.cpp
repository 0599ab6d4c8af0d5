#include "moe/plot/heatmap.h"

#include <algorithm>
#include <cmath>

#include "moe/core/error.h"
#include "moe/plot/bitmap_font.h"

namespace moe::plot {
namespace {

constexpr Rgb kAxisText{40, 40, 40};

double tick_step(const std::vector<double>& ticks) {
  return ticks.size() >= 2 ? ticks[1] - ticks[0] : 1.0;
}

}  // namespace

Rgb load_colour(double value, double v_max) {
  if (std::isnan(value)) return kNoData;
  v_max = std::max(v_max, 1.0 + 1e-12);
  value = std::clamp(value, 0.0, v_max);
  if (value <= 1.0) return mix(kLoadLow, kLoadBalanced, value);
  return mix(kLoadBalanced, kLoadHigh, (value - 1.0) / (v_max - 1.0));
}

int Heatmap::column_pixel(size_t k) const {
  const double middle = 0.5 * (column_starts.at(k) + static_cast<double>(iterations.at(k)));
  return static_cast<int>(std::floor(area.x_to_pixel(middle)));
}

int Heatmap::row_pixel(int64_t e) const {
  return area.top + static_cast<int>((static_cast<double>(e) + 0.5) / static_cast<double>(rows) *
                                     area.height());
}

Heatmap render_heatmap(const HeatmapData& d, const HeatmapOptions& o) {
  const size_t columns = d.iterations.size();
  MOE_CHECK(columns > 0 && d.rows > 0, "heatmap '", o.title, "' has ", columns, " columns and ",
            d.rows, " rows");
  MOE_CHECK(d.values.size() == columns * static_cast<size_t>(d.rows), "heatmap '", o.title,
            "': ", d.values.size(), " values for ", columns, " columns x ", d.rows, " rows");
  for (size_t k = 1; k < columns; ++k)
    MOE_CHECK(d.iterations[k] > d.iterations[k - 1], "heatmap '", o.title, "': iteration ",
              d.iterations[k], " follows ", d.iterations[k - 1]);

  Heatmap map{RgbImage(1, 1), PlotArea{}, 2.0, d.iterations, {}, d.rows};
  for (double v : d.values)
    if (std::isfinite(v)) map.v_max = std::max(map.v_max, v);
  // Column spans: each log point covers the iterations since the previous one.
  map.column_starts.resize(columns);
  for (size_t k = 0; k < columns; ++k) {
    const int64_t end = d.iterations[k];
    int64_t start;
    if (k > 0)
      start = d.iterations[k - 1];
    else
      start = columns > 1 ? end - (d.iterations[1] - end) : 0;
    start = std::max<int64_t>(start, 0);
    if (start >= end) start = end - 1;
    map.column_starts[k] = static_cast<double>(start);
  }

  const int scale = std::max(o.text_scale, 1);
  const int line_h = text_height(scale);
  const int gap = 4 * scale;
  const int plot_height = o.plot_height > 0
                              ? o.plot_height
                              : static_cast<int>(std::clamp<int64_t>(8 * d.rows, 240, 1024));

  // y ticks: expert indices at cell centres, spaced at least 2.5 label heights apart.
  const std::vector<double> y_ticks =
      integer_ticks(0.0, static_cast<double>(d.rows - 1),
                    std::clamp(static_cast<int>(plot_height / (line_h * 2.5)), 2,
                               static_cast<int>(std::min<int64_t>(d.rows, 1000))));
  std::vector<std::string> y_labels;
  int y_label_width = 0;
  for (double t : y_ticks) {
    y_labels.push_back(format_tick(t, std::max(tick_step(y_ticks), 1.0)));
    y_label_width = std::max(y_label_width, text_width(y_labels.back(), scale));
  }
  // The colour bar's ticks, for the right margin.
  const std::vector<double> bar_ticks =
      nice_ticks(0.0, map.v_max, std::clamp(plot_height / (line_h * 3), 2, 10));
  int bar_label_width = 0;
  for (double t : bar_ticks)
    bar_label_width =
        std::max(bar_label_width, text_width(format_tick(t, tick_step(bar_ticks)), scale));

  PlotArea& area = map.area;
  area.top = gap * 2 + line_h + gap * 3;
  area.bottom = area.top + plot_height;
  area.left = gap * 2 + line_h + gap * 2 + y_label_width + gap * 2 + 1;
  const int bar_width = 6 * gap;
  const int right_margin =
      gap * 4 + bar_width + 1 + gap * 2 + bar_label_width + gap * 2 + line_h + gap * 2;
  area.right = o.width - right_margin;
  MOE_CHECK(area.width() > 40, "heatmap width ", o.width, " leaves no room to plot");
  area.x_min = map.column_starts[0];
  area.x_max = static_cast<double>(d.iterations.back());
  area.y_min = 0.0;
  area.y_max = static_cast<double>(d.rows);
  const int height = area.bottom + gap + line_h + gap + line_h + gap * 2;
  map.image = RgbImage(o.width, height);
  RgbImage& img = map.image;

  // The cells: the cell under each pixel's centre.
  for (int px = area.left; px < area.right; ++px) {
    const double x = area.pixel_to_x(px);
    // The first column whose end is >= x (spans are (start, end]).
    const auto it =
        std::lower_bound(d.iterations.begin(), d.iterations.end(), x,
                         [](int64_t end, double v) { return static_cast<double>(end) < v; });
    const size_t k = std::min<size_t>(static_cast<size_t>(it - d.iterations.begin()), columns - 1);
    for (int py = area.top; py < area.bottom; ++py) {
      const int64_t e = std::clamp<int64_t>(
          static_cast<int64_t>((py + 0.5 - area.top) / area.height() * static_cast<double>(d.rows)),
          0, d.rows - 1);
      img.set(px, py,
              load_colour(d.values[k * static_cast<size_t>(d.rows) + static_cast<size_t>(e)],
                          map.v_max));
    }
  }
  img.draw_rect(area.left - 1, area.top - 1, area.right + 1, area.bottom + 1, kBlack);

  // y ticks at the cell centres.
  for (size_t i = 0; i < y_ticks.size(); ++i) {
    const int py = map.row_pixel(static_cast<int64_t>(std::lround(y_ticks[i])));
    img.fill_rect(area.left - 1 - gap, py, area.left - 1, py + 1, kBlack);
    draw_text(img, area.left - 1 - 2 * gap - text_width(y_labels[i], scale), py - line_h / 2,
              y_labels[i], kAxisText, scale);
  }
  // x ticks in iterations.
  const int x_label_guess =
      text_width(format_tick(area.x_max, 1.0), scale) + 2 * text_width("0", scale);
  const std::vector<double> x_ticks = integer_ticks(
      std::ceil(area.x_min), area.x_max, std::clamp(area.width() / (x_label_guess * 2), 2, 12));
  for (double t : x_ticks) {
    const int px =
        std::clamp(static_cast<int>(std::floor(area.x_to_pixel(t))), area.left, area.right - 1);
    img.fill_rect(px, area.bottom + 1, px + 1, area.bottom + 1 + gap / 2, kBlack);
    const std::string label = format_tick(t, std::max(tick_step(x_ticks), 1.0));
    draw_text(img, px - text_width(label, scale) / 2, area.bottom + gap, label, kAxisText, scale);
  }

  // The colour bar: v_max at the top, 0 at the bottom.
  const int bar_left = area.right + gap * 4, bar_right = bar_left + bar_width;
  for (int py = area.top; py < area.bottom; ++py) {
    const double v = map.v_max * (area.bottom - py - 0.5) / area.height();
    img.fill_rect(bar_left, py, bar_right, py + 1, load_colour(v, map.v_max));
  }
  img.draw_rect(bar_left - 1, area.top - 1, bar_right + 1, area.bottom + 1, kBlack);
  for (double t : bar_ticks) {
    const int py =
        std::clamp(area.bottom - static_cast<int>(std::lround(t / map.v_max * area.height())),
                   area.top, area.bottom - 1);
    img.fill_rect(bar_right + 1, py, bar_right + 1 + gap, py + 1, kBlack);
    draw_text(img, bar_right + 1 + 2 * gap, py - line_h / 2, format_tick(t, tick_step(bar_ticks)),
              kAxisText, scale);
  }

  draw_text(img, area.left, gap * 2, o.title, kBlack, scale);
  draw_axis_labels(img, area, o.x_label, o.y_label, gap, line_h, scale);
  if (!o.colour_bar_label.empty())
    draw_text_vertical(img, o.width - gap * 2 - line_h,
                       area.top + (area.height() + text_width(o.colour_bar_label, scale)) / 2,
                       o.colour_bar_label, kBlack, scale);
  return map;
}

}  // namespace moe::plot
