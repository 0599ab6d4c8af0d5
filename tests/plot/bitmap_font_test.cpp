// The chart font: every printable ASCII glyph is present and distinct, text lands where
// draw_text says at any scale, and vertical text is the horizontal text turned a quarter
// counter-clockwise.
#include "moe/plot/bitmap_font.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace moe::plot {
namespace {

std::vector<uint8_t> glyph(char c) {
  std::vector<uint8_t> rows;
  for (int r = 0; r < kGlyphHeight; ++r) rows.push_back(glyph_row(c, r));
  return rows;
}

TEST(PlotFont, EveryPrintableGlyphIsDistinctAndOnlySpaceIsBlank) {
  std::set<uint64_t> seen;  // each glyph's 9 x 5 bits packed into one key
  for (int c = 32; c <= 126; ++c) {
    const std::vector<uint8_t> g = glyph(static_cast<char>(c));
    int ink = 0;
    for (uint8_t row : g) {
      EXPECT_LT(row, 1 << kGlyphWidth) << "glyph " << c;
      ink += __builtin_popcount(row);
    }
    if (c == ' ')
      EXPECT_EQ(ink, 0);
    else
      EXPECT_GT(ink, 0) << "glyph '" << static_cast<char>(c) << "' is blank";
    uint64_t key = 0;
    for (uint8_t row : g) key = key << kGlyphWidth | row;
    EXPECT_TRUE(seen.insert(key).second)
        << "glyph '" << static_cast<char>(c) << "' repeats another";
  }
  // Descenders live below the baseline (rows 7..8); capitals do not.
  EXPECT_NE(glyph('g')[8], 0);
  EXPECT_NE(glyph('y')[7], 0);
  EXPECT_EQ(glyph('E')[7] | glyph('E')[8], 0);
  // Known pixels: the 'E' bar, the '1' stem, the '-' bar in the middle row.
  EXPECT_EQ(glyph('E')[0], 0b11111);
  EXPECT_EQ(glyph('1')[4], 0b00100);
  EXPECT_EQ(glyph('-')[3], 0b11111);
  // Outside 32..126: '?'.
  EXPECT_EQ(glyph('\n'), glyph('?'));
  EXPECT_EQ(glyph(static_cast<char>(200)), glyph('?'));
}

TEST(PlotFont, TextPixelsFollowTheGlyphsAtEveryScale) {
  EXPECT_EQ(text_width("", 2), 0);
  EXPECT_EQ(text_width("a", 1), 5);
  EXPECT_EQ(text_width("ab", 1), 11);
  EXPECT_EQ(text_width("ab", 3), 33);
  for (int scale : {1, 2, 3}) {
    SCOPED_TRACE(scale);
    const std::string text = "Ag7";
    RgbImage img(60, 40);
    const Rgb ink{10, 20, 30};
    draw_text(img, 4, 3, text, ink, scale);
    for (int y = 0; y < img.height(); ++y)
      for (int x = 0; x < img.width(); ++x) {
        bool expected = false;
        const int u = x - 4, v = y - 3;
        if (u >= 0 && v >= 0 && v < kGlyphHeight * scale) {
          const int i = u / (kCellWidth * scale), col = u % (kCellWidth * scale) / scale;
          if (i < static_cast<int>(text.size()) && col < kGlyphWidth)
            expected =
                glyph_row(text[static_cast<size_t>(i)], v / scale) >> (kGlyphWidth - 1 - col) & 1;
        }
        ASSERT_EQ(img.at(x, y) == ink, expected) << "pixel " << x << ", " << y;
      }
  }
}

TEST(PlotFont, VerticalTextIsTheHorizontalTextTurnedCounterClockwise) {
  const std::string text = "loss_1";
  RgbImage across(text_width(text, 2), text_height(2));
  draw_text(across, 0, 0, text, kBlack, 2);
  RgbImage up(text_height(2), text_width(text, 2));
  draw_text_vertical(up, 0, up.height(), text, kBlack, 2);
  // Turning (u, v) counter-clockwise puts it at (v, W - 1 - u).
  for (int v = 0; v < across.height(); ++v)
    for (int u = 0; u < across.width(); ++u)
      ASSERT_EQ(across.at(u, v), up.at(v, across.width() - 1 - u)) << u << ", " << v;
  // Clipped, not out of bounds, when text runs past the edges.
  RgbImage small(8, 8);
  draw_text(small, -3, -3, "XYZ", kBlack, 3);
  draw_text_vertical(small, 5, 4, "XYZ", kBlack, 3);
}

}  // namespace
}  // namespace moe::plot
