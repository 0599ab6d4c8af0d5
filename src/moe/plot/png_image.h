// An 8-bit RGB canvas and its PNG file, for `moe plot`'s charts. Drawing clips at the edges, so
// chart code may draw lines and text that run past the image without checks of its own. PNG
// files are encoded by libpng and written atomically (io/atomic_file.h): a reader never sees a
// half-written chart.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::plot {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

inline constexpr Rgb kWhite{255, 255, 255};
inline constexpr Rgb kBlack{0, 0, 0};

// Linear interpolation a + t (b - a) per channel, t clamped to [0, 1], rounded to nearest.
Rgb mix(Rgb a, Rgb b, double t);

class RgbImage {
 public:
  RgbImage(int width, int height, Rgb background = kWhite);

  int width() const { return width_; }
  int height() const { return height_; }
  bool contains(int x, int y) const { return x >= 0 && y >= 0 && x < width_ && y < height_; }

  // The pixel at column x, row y (0, 0 = top left); throws moe::Error outside the image.
  Rgb at(int x, int y) const;
  // Sets a pixel; does nothing outside the image.
  void set(int x, int y, Rgb colour);
  // Fills the half-open rectangle [x0, x1) x [y0, y1), clipped.
  void fill_rect(int x0, int y0, int x1, int y1, Rgb colour);
  // The outline of [x0, x1) x [y0, y1), one pixel wide, inside the rectangle.
  void draw_rect(int x0, int y0, int x1, int y1, Rgb colour);
  // A straight line between pixel centres with a square brush `thickness` pixels wide
  // (Bresenham's walk; every step paints the brush).
  void draw_line(int x0, int y0, int x1, int y1, Rgb colour, int thickness = 1);

  // Row-major RGB bytes, 3 per pixel.
  const std::vector<uint8_t>& bytes() const { return pixels_; }

 private:
  int width_ = 0, height_ = 0;
  std::vector<uint8_t> pixels_;
};

// The image as PNG bytes (8-bit RGB, no interlacing).
std::vector<uint8_t> encode_png(const RgbImage& image);
// Encodes and writes `path` atomically; throws moe::Error naming the path on failure.
void write_png(const RgbImage& image, const std::string& path);

}  // namespace moe::plot
