// The loss chart read back from its PNG: the curve's pixels sit where the data says, a falling
// loss is a falling trace, a non-finite point breaks the line, the validation series has its own
// colour and markers, and the title, tick labels and axis labels are drawn where they belong.
#include "moe/plot/line_chart.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "moe/core/error.h"
#include "plot/plot_test_util.h"
#include "plot/png_testing.h"

namespace moe::plot {
namespace {

constexpr Rgb kTrain{0, 90, 200};
constexpr Rgb kValid{230, 110, 0};

struct Drawn {
  LineChart chart;
  test::DecodedPng png;
};

Drawn draw(const std::vector<Series>& series, const std::string& name) {
  LineChartOptions o;
  o.title = "lm loss";
  o.y_label = "loss";
  LineChart chart = render_line_chart(series, o);
  const std::string path = (test::fresh_plot_dir(name) / "chart.png").string();
  write_png(chart.image, path);
  return {std::move(chart), test::decode_png(path)};
}

TEST(PlotLineChart, FallingLossIsAFallingTraceThroughTheDataPoints) {
  Series loss{"lm loss", {}, {}, kTrain, false};
  for (int i = 1; i <= 60; ++i) {
    loss.x.push_back(10.0 * i);
    loss.y.push_back(2.0 + 8.0 / (1.0 + 0.2 * i) + 0.002 * std::sin(i));  // wavy, still falling
  }
  for (size_t i = 1; i < loss.y.size(); ++i) ASSERT_LT(loss.y[i], loss.y[i - 1]);
  const Drawn d = draw({loss}, "falling");
  const PlotArea& a = d.chart.area;
  ASSERT_EQ(d.png.width, 960);
  ASSERT_EQ(d.png.height, 600);
  // Ranges from the data: x exactly [10, 600]; y the data range plus 5% each side.
  EXPECT_DOUBLE_EQ(a.x_min, 10.0);
  EXPECT_DOUBLE_EQ(a.x_max, 600.0);
  const double lo = loss.y.back(), hi = loss.y.front(), pad = 0.05 * (hi - lo);
  EXPECT_NEAR(a.y_min, lo - pad, 1e-12);
  EXPECT_NEAR(a.y_max, hi + pad, 1e-12);

  // Every data point is on the curve (within the 2-pixel brush).
  for (size_t i = 0; i < loss.x.size(); ++i) {
    const int px = std::min(static_cast<int>(std::floor(a.x_to_pixel(loss.x[i]))), a.right - 1);
    const int py = static_cast<int>(std::floor(a.y_to_pixel(loss.y[i])));
    bool found = false;
    for (int dy = -1; dy <= 1 && !found; ++dy)
      for (int dx = -1; dx <= 1 && !found; ++dx) found = d.png.at(px + dx, py + dy) == kTrain;
    EXPECT_TRUE(found) << "point " << i << " at pixel " << px << ", " << py;
  }
  // Column by column, the curve's top and bottom pixels only move down: a monotone trace.
  int previous_top = -1, previous_bottom = -1, columns = 0;
  for (int x = a.left; x < a.right; ++x) {
    int top = -1, bottom = -1;
    for (int y = a.top; y < a.bottom; ++y)
      if (d.png.at(x, y) == kTrain) {
        if (top < 0) top = y;
        bottom = y;
      }
    if (top < 0) continue;
    ++columns;
    EXPECT_GE(top, previous_top) << "column " << x;
    EXPECT_GE(bottom, previous_bottom) << "column " << x;
    previous_top = top, previous_bottom = bottom;
  }
  EXPECT_GE(columns, a.width() - 2);  // the line spans the plot area
  // Curve pixels never leave the plot area.
  for (int y = 0; y < d.png.height; ++y)
    for (int x = 0; x < d.png.width; ++x)
      if (d.png.at(x, y) == kTrain && y >= a.top) {  // the legend swatch sits above the area
        ASSERT_TRUE(x >= a.left && x < a.right && y < a.bottom) << x << ", " << y;
      }

  // Labels: the title above, y tick labels left of the area, x tick labels and the axis label
  // below it, the vertical y label at the left edge.
  EXPECT_GT(test::ink_in(d.png, a.left, 0, a.left + 200, a.top - 4), 20) << "title";
  EXPECT_GT(test::ink_in(d.png, 40, a.top - 10, a.left - 3, a.bottom + 10), 50) << "y tick labels";
  EXPECT_GT(test::ink_in(d.png, a.left - 20, a.bottom + 3, a.right + 20, a.bottom + 28), 50)
      << "x tick labels";
  EXPECT_GT(test::ink_in(d.png, a.left, a.bottom + 28, a.right, d.png.height), 20) << "x label";
  EXPECT_GT(test::ink_in(d.png, 0, a.top, 30, a.bottom), 20) << "y label";
  EXPECT_EQ(test::ink_in(d.png, 0, 0, 8, d.png.height), 0) << "left margin";
}

TEST(PlotLineChart, RisingSeriesIsARisingTraceAndValidationHasItsOwnColour) {
  Series train{"lm loss", {1, 2, 3, 4, 5, 6, 7, 8}, {1, 2, 3, 4, 5, 6, 7, 8}, kTrain, false};
  Series valid{"validation lm loss", {4, 8}, {3.5, 7.5}, kValid, true};
  const Drawn d = draw({train, valid}, "rising");
  const PlotArea& a = d.chart.area;
  EXPECT_DOUBLE_EQ(a.x_min, 1.0);
  EXPECT_DOUBLE_EQ(a.x_max, 8.0);
  int previous = std::numeric_limits<int>::max();
  for (int x = a.left; x < a.right; ++x) {
    int top = -1;
    for (int y = a.top; y < a.bottom && top < 0; ++y)
      if (d.png.at(x, y) == kTrain) top = y;
    if (top < 0) continue;
    EXPECT_LE(top, previous) << "column " << x;
    previous = top;
  }
  // The validation markers: 5 x 5 squares of their colour centred on the points, clipped by
  // the plot area (the last point is on its right edge).
  for (size_t i = 0; i < valid.x.size(); ++i) {
    const int px = std::min(static_cast<int>(std::floor(a.x_to_pixel(valid.x[i]))), a.right - 1);
    const int py = static_cast<int>(std::floor(a.y_to_pixel(valid.y[i])));
    for (int dy = -2; dy <= 2; ++dy)
      for (int dx = -2; dx <= 2; ++dx) {
        const bool inside = px + dx >= a.left && px + dx < a.right;
        EXPECT_EQ(d.png.at(px + dx, py + dy) == kValid, inside)
            << "point " << i << " " << dx << ", " << dy;
      }
  }
  // Both legend entries are drawn above the plot area.
  int train_swatch = 0, valid_swatch = 0;
  for (int y = 0; y < a.top; ++y)
    for (int x = 0; x < d.png.width; ++x) {
      train_swatch += d.png.at(x, y) == kTrain;
      valid_swatch += d.png.at(x, y) == kValid;
    }
  EXPECT_GT(train_swatch, 0);
  EXPECT_GT(valid_swatch, 0);
}

TEST(PlotLineChart, NonFiniteLossBreaksTheLine) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Series loss{"lm loss", {1, 2, 3, 4, 5, 6}, {3, 3, nan, nan, 3, 3}, kTrain, false};
  loss.y[0] = 3.0, loss.y[5] = 2.0;  // not flat, so the y range is the data's
  const Drawn d = draw({loss}, "gap");
  const PlotArea& a = d.chart.area;
  const int gap_x = static_cast<int>(std::floor(a.x_to_pixel(3.5)));
  for (int y = a.top; y < a.bottom; ++y) EXPECT_NE(d.png.at(gap_x, y), kTrain) << y;
  const int drawn_x = static_cast<int>(std::floor(a.x_to_pixel(1.5)));
  int n = 0;
  for (int y = a.top; y < a.bottom; ++y) n += d.png.at(drawn_x, y) == kTrain;
  EXPECT_GT(n, 0);
}

TEST(PlotLineChart, SinglePointAndBadInput) {
  const Drawn d = draw({Series{"lm loss", {100}, {2.5}, kTrain, false}}, "single");
  const PlotArea& a = d.chart.area;
  EXPECT_LT(a.x_min, 100.0);
  EXPECT_GT(a.x_max, 100.0);
  EXPECT_LT(a.y_min, 2.5);
  EXPECT_GT(a.y_max, 2.5);
  EXPECT_EQ(d.png.at(static_cast<int>(a.x_to_pixel(100.0)), static_cast<int>(a.y_to_pixel(2.5))),
            kTrain);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(render_line_chart({Series{"x", {1, 2}, {nan, nan}, kTrain, false}}, {}), moe::Error);
  EXPECT_THROW(render_line_chart({}, {}), moe::Error);
  EXPECT_THROW(render_line_chart({Series{"x", {1, 2}, {1}, kTrain, false}}, {}), moe::Error);
}

}  // namespace
}  // namespace moe::plot
