// A small fixed-width pixel font for chart labels: printable ASCII (32..126), each glyph 5 x 9
// pixels (rows 0..6 above the baseline, rows 7..8 for descenders such as g, j, p, q, y), drawn
// for moecore as a bit table in bitmap_font.cpp. A character cell is 6 x 10 pixels (one column
// and one row of spacing); everything scales by an integer factor (each font pixel becomes a
// scale x scale square), so labels stay crisp without anti-aliasing.
#pragma once

#include <cstdint>
#include <string_view>

#include "moe/plot/png_image.h"

namespace moe::plot {

inline constexpr int kGlyphWidth = 5;
inline constexpr int kGlyphHeight = 9;
inline constexpr int kCellWidth = 6;
inline constexpr int kCellHeight = 10;

// Row r (0 = top) of a character's glyph: bit 4 is the leftmost pixel, bit 0 the rightmost.
// Characters outside 32..126 are drawn as '?'.
uint8_t glyph_row(char c, int row);

// Pixel size of `text` on one line at `scale` (no trailing spacing column).
int text_width(std::string_view text, int scale = 1);
inline int text_height(int scale = 1) {
  return kGlyphHeight * scale;
}

// Draws `text` left to right with the top-left corner of its first cell at (x, y); pixels that
// fall outside the image are clipped.
void draw_text(RgbImage& image, int x, int y, std::string_view text, Rgb colour, int scale = 1);
// Draws `text` rotated 90 degrees counter-clockwise (read bottom to top, as a y-axis label):
// (x, y) is the bottom-left corner of the rotated text; it occupies text_height(scale) columns
// from x and text_width(text, scale) rows above y.
void draw_text_vertical(RgbImage& image, int x, int y, std::string_view text, Rgb colour,
                        int scale = 1);

}  // namespace moe::plot
