// The RGB canvas and its PNG file: what is drawn is what libpng decodes from the file, lines
// reach both ends with the brush width asked, and writing fails loudly and atomically.
#include "moe/plot/png_image.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "moe/core/error.h"
#include "plot/plot_test_util.h"
#include "plot/png_testing.h"

namespace moe::plot {
namespace {

namespace fs = std::filesystem;

TEST(PlotPng, WrittenPixelsDecodeBackExactly) {
  const fs::path dir = test::fresh_plot_dir("png");
  RgbImage img(37, 23, Rgb{1, 2, 3});
  for (int y = 0; y < img.height(); ++y)
    for (int x = 0; x < img.width(); ++x)
      img.set(x, y,
              Rgb{static_cast<uint8_t>(7 * x), static_cast<uint8_t>(11 * y),
                  static_cast<uint8_t>((x * y) % 256)});
  img.fill_rect(30, 20, 100, 100, Rgb{250, 0, 5});  // clipped at the edges
  const std::string path = (dir / "pixels.png").string();
  write_png(img, path);
  const test::DecodedPng png = test::decode_png(path);
  ASSERT_EQ(png.width, 37);
  ASSERT_EQ(png.height, 23);
  for (int y = 0; y < img.height(); ++y)
    for (int x = 0; x < img.width(); ++x) ASSERT_EQ(png.at(x, y), img.at(x, y)) << x << ", " << y;
  EXPECT_EQ(png.at(36, 22), (Rgb{250, 0, 5}));
  EXPECT_EQ(png.at(5, 5), (Rgb{35, 55, 25}));
  // Rewriting replaces the file whole; no temporary is left beside it.
  write_png(RgbImage(4, 4, kBlack), path);
  EXPECT_EQ(test::decode_png(path).width, 4);
  int files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 1);
}

TEST(PlotPng, BadSizesAndPathsAreErrors) {
  EXPECT_THROW(RgbImage(0, 5), moe::Error);
  EXPECT_THROW(RgbImage(5, -1), moe::Error);
  const RgbImage img(3, 3);
  EXPECT_THROW(img.at(3, 0), moe::Error);
  EXPECT_THROW(write_png(img, "/nonexistent-folder-for-moe-plot/x.png"), moe::Error);
}

TEST(PlotPng, LinesReachBothEndsWithTheBrushWidth) {
  RgbImage img(50, 40);
  const Rgb ink{200, 0, 0};
  img.draw_line(5, 30, 44, 8, ink, 1);
  EXPECT_EQ(img.at(5, 30), ink);
  EXPECT_EQ(img.at(44, 8), ink);
  // A 1-pixel line with |dx| > |dy| has exactly one pixel per column.
  for (int x = 5; x <= 44; ++x) {
    int n = 0;
    for (int y = 0; y < img.height(); ++y) n += img.at(x, y) == ink;
    EXPECT_EQ(n, 1) << "column " << x;
  }
  RgbImage thick(20, 20);
  thick.draw_line(3, 10, 15, 10, ink, 3);  // horizontal, 3 wide: rows 9..11
  for (int x = 3; x <= 15; ++x)
    for (int y = 0; y < 20; ++y)
      EXPECT_EQ(thick.at(x, y) == ink, y >= 9 && y <= 11) << x << ", " << y;
  EXPECT_EQ(thick.at(1, 10), kWhite);  // the brush extends 1 pixel past the end, not 2
  EXPECT_EQ(thick.at(2, 10), ink);
}

TEST(PlotPng, MixInterpolatesAndClamps) {
  EXPECT_EQ(mix(Rgb{0, 100, 200}, Rgb{100, 0, 200}, 0.5), (Rgb{50, 50, 200}));
  EXPECT_EQ(mix(Rgb{0, 0, 0}, kWhite, -1.0), (Rgb{0, 0, 0}));
  EXPECT_EQ(mix(Rgb{0, 0, 0}, kWhite, 2.0), kWhite);
}

}  // namespace
}  // namespace moe::plot
