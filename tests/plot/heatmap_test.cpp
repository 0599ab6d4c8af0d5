// The expert-load heatmap read back from its PNG: each cell has the colour the colour map gives
// its relative load (blue below balance, white at 1, red at the top), columns are as wide as the
// iterations they cover, expert 0 is the top row, and the colour bar runs from 0 to v_max.
#include "moe/plot/heatmap.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "moe/core/error.h"
#include "moe/plot/training_plots.h"
#include "plot/plot_test_util.h"
#include "plot/png_testing.h"

namespace moe::plot {
namespace {

TEST(PlotHeatmap, ColourMapAnchorsAndOrder) {
  EXPECT_EQ(load_colour(0.0, 3.0), kLoadLow);
  EXPECT_EQ(load_colour(1.0, 3.0), kLoadBalanced);
  EXPECT_EQ(load_colour(3.0, 3.0), kLoadHigh);
  EXPECT_EQ(load_colour(7.0, 3.0), kLoadHigh);  // clamped
  EXPECT_EQ(load_colour(-1.0, 3.0), kLoadLow);  // clamped
  EXPECT_EQ(load_colour(std::nan(""), 3.0), kNoData);
  EXPECT_EQ(load_colour(0.5, 3.0), mix(kLoadLow, kLoadBalanced, 0.5));
  EXPECT_EQ(load_colour(2.0, 3.0), mix(kLoadBalanced, kLoadHigh, 0.5));
  // Below balance: the red channel grows towards white; above it the blue channel falls to red.
  for (int i = 0; i < 10; ++i)
    EXPECT_LT(load_colour(i / 10.0, 3.0).r, load_colour((i + 1) / 10.0, 3.0).r);
  for (int i = 0; i < 10; ++i)
    EXPECT_GT(load_colour(1.0 + i / 5.0, 3.0).b, load_colour(1.0 + (i + 1) / 5.0, 3.0).b);
}

TEST(PlotHeatmap, RelativeLoadsFromTokenCounts) {
  LayerExpertLoads loads{3, {{10, {4, 4, 4, 4}}, {20, {8, 0, 4, 4}}, {30, {0, 0, 0, 0}}}};
  const HeatmapData d = expert_load_heatmap(loads);
  EXPECT_EQ(d.rows, 4);
  EXPECT_EQ(d.iterations, (std::vector<int64_t>{10, 20, 30}));
  ASSERT_EQ(d.values.size(), 12u);
  for (int e = 0; e < 4; ++e) EXPECT_DOUBLE_EQ(d.values[static_cast<size_t>(e)], 1.0);
  EXPECT_DOUBLE_EQ(d.values[4], 2.0);  // 8 / mean 4
  EXPECT_DOUBLE_EQ(d.values[5], 0.0);
  EXPECT_DOUBLE_EQ(d.values[6], 1.0);
  EXPECT_TRUE(std::isnan(d.values[8]));  // an interval without tokens has no load
}

TEST(PlotHeatmap, CellsTakeTheColourOfTheirValue) {
  // 5 experts x 4 log points, the last interval shorter (train_iters not a multiple of the
  // log interval); one empty interval cell, one hot expert.
  HeatmapData d;
  d.iterations = {10, 20, 30, 35};
  d.rows = 5;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  d.values = {1.0, 1.0, 1.0, 1.0, 1.0,  //
              0.0, 0.5, 1.5, 2.5, 0.5,  //
              0.2, 3.5, 0.4, 0.6, 0.3,  //
              nan, 1.2, 0.8, 1.0, 2.0};
  HeatmapOptions o;
  o.title = "expert load, layer 1";
  const Heatmap map = render_heatmap(d, o);
  EXPECT_DOUBLE_EQ(map.v_max, 3.5);
  const std::string path = (test::fresh_plot_dir("heatmap") / "heatmap.png").string();
  write_png(map.image, path);
  const test::DecodedPng png = test::decode_png(path);
  ASSERT_EQ(png.width, map.image.width());
  ASSERT_EQ(png.height, map.image.height());
  const PlotArea& a = map.area;
  EXPECT_EQ(a.height(), 240);      // clamp(8 x 5 rows, 240, 1024)
  EXPECT_DOUBLE_EQ(a.x_min, 0.0);  // the first column spans (0, 10]
  EXPECT_DOUBLE_EQ(a.x_max, 35.0);

  for (size_t k = 0; k < 4; ++k)
    for (int64_t e = 0; e < 5; ++e) {
      const double v = d.values[k * 5 + static_cast<size_t>(e)];
      EXPECT_EQ(png.at(map.column_pixel(k), map.row_pixel(e)), load_colour(v, map.v_max))
          << "column " << k << " expert " << e;
    }
  EXPECT_EQ(png.at(map.column_pixel(2), map.row_pixel(1)), kLoadHigh);  // the hot expert
  EXPECT_EQ(png.at(map.column_pixel(1), map.row_pixel(0)), kLoadLow);   // a starved one
  EXPECT_EQ(png.at(map.column_pixel(3), map.row_pixel(0)), kNoData);
  // Expert 0 is the top band; the last expert the bottom one.
  EXPECT_EQ(png.at(map.column_pixel(1), a.top), load_colour(0.0, map.v_max));
  EXPECT_EQ(png.at(map.column_pixel(1), a.bottom - 1), load_colour(0.5, map.v_max));
  // Column widths follow the iterations covered: the last (5 iterations) is half the others.
  auto width_of = [&](size_t k, int64_t e) {
    const Rgb c = png.at(map.column_pixel(k), map.row_pixel(e));
    int w = 0;
    for (int x = a.left; x < a.right; ++x) w += png.at(x, map.row_pixel(e)) == c;
    return w;
  };
  const int column_1 = width_of(1, 3);  // value 2.5 appears only in column 1, row 3
  const int column_3 = width_of(3, 4);  // value 2.0 only in column 3, row 4
  EXPECT_NEAR(column_1, a.width() * 10.0 / 35.0, 1.5);
  EXPECT_NEAR(column_3, a.width() * 5.0 / 35.0, 1.5);

  // The colour bar, right of the plot: v_max at the top, 0 at the bottom, white at 1.
  int bar_x = -1;
  for (int x = a.right + 2; x < png.width && bar_x < 0; ++x)
    if (png.at(x, a.top) == load_colour(map.v_max * (a.height() - 0.5) / a.height(), map.v_max))
      bar_x = x;
  ASSERT_GE(bar_x, 0) << "no colour bar";
  EXPECT_EQ(png.at(bar_x, a.bottom - 1), load_colour(map.v_max * 0.5 / a.height(), map.v_max));
  const int balanced_row = a.bottom - static_cast<int>(std::lround(a.height() / map.v_max));
  const Rgb near_one = png.at(bar_x, balanced_row);
  EXPECT_GT(near_one.r, 240);
  EXPECT_GT(near_one.g, 240);
  EXPECT_GT(near_one.b, 240);

  // Labels: the title, expert ticks left, iteration ticks below, the colour bar's ticks right.
  EXPECT_GT(test::ink_in(png, a.left, 0, a.right, a.top - 2), 20) << "title";
  EXPECT_GT(test::ink_in(png, 30, a.top, a.left - 2, a.bottom), 20) << "expert ticks";
  EXPECT_GT(test::ink_in(png, a.left, a.bottom + 2, a.right, a.bottom + 30), 20)
      << "iteration ticks";
  EXPECT_GT(test::ink_in(png, bar_x + 60, a.top - 10, png.width - 40, a.bottom + 10), 20)
      << "colour bar ticks";
  EXPECT_GT(test::ink_in(png, png.width - 30, a.top, png.width, a.bottom), 20)
      << "colour bar label";
}

TEST(PlotHeatmap, ManyExpertsAndColumnsAreSampledAndBadInputIsAnError) {
  HeatmapData d;
  d.rows = 256;
  for (int k = 0; k < 3000; ++k) d.iterations.push_back(k + 1);
  for (int k = 0; k < 3000; ++k)
    for (int e = 0; e < 256; ++e) d.values.push_back(e % 2 ? 2.0 : 0.0);
  const Heatmap map = render_heatmap(d, {});
  EXPECT_EQ(map.area.height(), 1024);  // 4 pixels per expert
  EXPECT_EQ(map.image.at(map.column_pixel(1500), map.row_pixel(7)), kLoadHigh);
  EXPECT_EQ(map.image.at(map.column_pixel(1500), map.row_pixel(8)), kLoadLow);

  HeatmapData bad = d;
  bad.values.pop_back();
  EXPECT_THROW(render_heatmap(bad, {}), moe::Error);
  bad = HeatmapData{{10, 10}, 1, {1.0, 1.0}};
  EXPECT_THROW(render_heatmap(bad, {}), moe::Error);  // iterations must increase
  EXPECT_THROW(render_heatmap(HeatmapData{}, {}), moe::Error);
}

}  // namespace
}  // namespace moe::plot
