// Axis ticks: nice steps, tick placement and labels a reader expects ("0.5", "1000", not
// "0.50000001" or "-0"), and the pixel mapping of a plot area.
#include "moe/plot/chart_axis.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "moe/core/error.h"

namespace moe::plot {
namespace {

TEST(PlotAxis, NiceSteps) {
  EXPECT_DOUBLE_EQ(nice_step(0.7), 1.0);
  EXPECT_DOUBLE_EQ(nice_step(1.0), 1.0);
  EXPECT_DOUBLE_EQ(nice_step(1.3), 2.0);
  EXPECT_DOUBLE_EQ(nice_step(2.2), 2.5);
  EXPECT_DOUBLE_EQ(nice_step(3.0), 5.0);
  EXPECT_DOUBLE_EQ(nice_step(7.0), 10.0);
  EXPECT_DOUBLE_EQ(nice_step(0.3 / 0.1 * 0.01), 0.05);
  EXPECT_DOUBLE_EQ(nice_step(180.0), 200.0);
  EXPECT_THROW(nice_step(0.0), moe::Error);
}

TEST(PlotAxis, TicksFillTheRangeWithRoundNumbers) {
  EXPECT_EQ(nice_ticks(0.0, 10.0, 6), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  EXPECT_EQ(nice_ticks(0.0, 10.0, 3), (std::vector<double>{0, 5, 10}));
  const std::vector<double> loss = nice_ticks(1.83, 4.62, 8);  // a loss curve's padded range
  ASSERT_GE(loss.size(), 4u);
  EXPECT_LE(loss.size(), 8u);
  EXPECT_GE(loss.front(), 1.83);
  EXPECT_LE(loss.back(), 4.62);
  EXPECT_NEAR(loss[0], 2.0, 1e-12);
  EXPECT_NEAR(loss[1] - loss[0], 0.5, 1e-12);
  const std::vector<double> negative = nice_ticks(-1.0, 1.0, 5);
  EXPECT_EQ(negative, (std::vector<double>{-1, -0.5, 0, 0.5, 1}));
  EXPECT_FALSE(std::signbit(negative[2]));  // 0, never -0
  EXPECT_EQ(nice_ticks(3.0, 3.0, 5), (std::vector<double>{3.0}));
  EXPECT_THROW(nice_ticks(2.0, 1.0, 5), moe::Error);
  // Integer ticks never step by 2.5 or less than 1.
  EXPECT_EQ(integer_ticks(0.0, 3.0, 10), (std::vector<double>{0, 1, 2, 3}));
  EXPECT_EQ(integer_ticks(0.0, 15.0, 7), (std::vector<double>{0, 5, 10, 15}));
  EXPECT_EQ(integer_ticks(10.0, 1000.0, 6), (std::vector<double>{200, 400, 600, 800, 1000}));
}

TEST(PlotAxis, TickLabels) {
  EXPECT_EQ(format_tick(1000.0, 200.0), "1000");
  EXPECT_EQ(format_tick(2.5, 0.5), "2.5");
  EXPECT_EQ(format_tick(2.0, 0.5), "2.0");
  EXPECT_EQ(format_tick(0.25, 0.25), "0.25");
  EXPECT_EQ(format_tick(-0.0, 0.1), "0");
  EXPECT_EQ(format_tick(1e-17, 0.1), "0");
  EXPECT_EQ(format_tick(3.0001, 0.0001), "3.0001");
  EXPECT_EQ(format_tick(2e6, 5e5), "2e+06");
  EXPECT_EQ(format_tick(2.5e6, 5e5), "2.5e+06");
}

TEST(PlotAxis, PlotAreaMapsDataToPixels) {
  PlotArea a;
  a.left = 10, a.right = 110, a.top = 20, a.bottom = 70;
  a.x_min = 0, a.x_max = 1000, a.y_min = 2, a.y_max = 4;
  EXPECT_DOUBLE_EQ(a.x_to_pixel(0), 10);
  EXPECT_DOUBLE_EQ(a.x_to_pixel(1000), 110);
  EXPECT_DOUBLE_EQ(a.y_to_pixel(4), 20);
  EXPECT_DOUBLE_EQ(a.y_to_pixel(2), 70);
  EXPECT_DOUBLE_EQ(a.pixel_to_x(10), 5);  // the centre of the first column
  EXPECT_DOUBLE_EQ(a.pixel_to_y(69), 2.02);
}

}  // namespace
}  // namespace moe::plot
