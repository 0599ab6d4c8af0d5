#include "moe/plot/chart_axis.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "moe/core/error.h"
#include "moe/plot/bitmap_font.h"

namespace moe::plot {

double nice_step(double raw_step) {
  MOE_CHECK(std::isfinite(raw_step) && raw_step > 0.0, "nice_step: step ", raw_step,
            " is not a positive finite number");
  const double power = std::pow(10.0, std::floor(std::log10(raw_step)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    // A relative slack, so 0.3 / 0.1 (2.9999999999999996) is not pushed to the next step.
    if (m * power >= raw_step * (1.0 - 1e-9)) return m * power;
  }
  return 10.0 * power;
}

namespace {

std::vector<double> ticks_with_steps(double lo, double hi, int max_ticks, bool integer_steps) {
  MOE_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "axis range [", lo, ", ", hi,
            "] is not a finite interval");
  if (lo == hi) return {lo};
  max_ticks = std::max(max_ticks, 2);
  // A span below the doubles' resolution at this magnitude: m * step would not advance.
  if ((hi - lo) < 1e-12 * std::max(std::abs(lo), std::abs(hi))) return {lo, hi};
  auto ticks_of = [&](double step) {
    std::vector<double> ticks;
    for (double m = std::ceil(lo / step - 1e-9);; m += 1.0) {
      const double t = m * step;
      if (t > hi + step * 1e-9) break;
      ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);  // no -0
    }
    return ticks;
  };
  // From a step giving about 10 x max_ticks ticks upwards through the nice steps.
  double step = nice_step((hi - lo) / (10.0 * max_ticks));
  if (integer_steps) step = std::max(step, 1.0);
  for (;;) {
    if (integer_steps && step != std::round(step)) {
      step = nice_step(step * 1.0001);
      continue;
    }
    std::vector<double> ticks = ticks_of(step);
    if (static_cast<int>(ticks.size()) <= max_ticks) return ticks;
    step = nice_step(step * 1.0001);
  }
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int max_ticks) {
  return ticks_with_steps(lo, hi, max_ticks, false);
}

std::vector<double> integer_ticks(double lo, double hi, int max_ticks) {
  return ticks_with_steps(lo, hi, max_ticks, true);
}

std::string format_tick(double value, double step) {
  char text[64];
  const double magnitude = std::abs(value);
  if (magnitude < step * 1e-9) return "0";
  if (magnitude >= 1e6 || step < 1e-4) {
    // Significant digits enough to tell value from value + step.
    const int digits = std::clamp(
        static_cast<int>(std::ceil(std::log10(magnitude / std::max(step, 1e-300)) + 1e-9)) + 1, 2,
        12);
    std::snprintf(text, sizeof(text), "%.*g", digits, value);
    return text;
  }
  // Decimals of the step itself (0.25 needs 2): the first k with step * 10^k an integer.
  int decimals = 0;
  while (decimals < 4) {
    const double scaled = step * std::pow(10.0, decimals);
    if (std::abs(scaled - std::round(scaled)) < 1e-6 * scaled) break;
    ++decimals;
  }
  std::snprintf(text, sizeof(text), "%.*f", decimals, value);
  return text;
}

double PlotArea::x_to_pixel(double x) const {
  const double span = x_max > x_min ? x_max - x_min : 1.0;
  return left + (x - x_min) / span * width();
}

double PlotArea::y_to_pixel(double y) const {
  const double span = y_max > y_min ? y_max - y_min : 1.0;
  return bottom - (y - y_min) / span * height();
}

double PlotArea::pixel_to_x(int px) const {
  return x_min + (px + 0.5 - left) / width() * (x_max - x_min);
}

double PlotArea::pixel_to_y(int py) const {
  return y_max - (py + 0.5 - top) / height() * (y_max - y_min);
}

void draw_axis_labels(RgbImage& img, const PlotArea& area, std::string_view x_label,
                      std::string_view y_label, int gap, int line_h, int scale) {
  if (!x_label.empty())
    draw_text(img, area.left + (area.width() - text_width(x_label, scale)) / 2,
              area.bottom + gap + line_h + gap, x_label, kBlack, scale);
  if (!y_label.empty())
    draw_text_vertical(img, gap * 2, area.top + (area.height() + text_width(y_label, scale)) / 2,
                       y_label, kBlack, scale);
}

}  // namespace moe::plot
