#include "moe/plot/png_image.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "moe/core/error.h"
#include "moe/io/atomic_file.h"

namespace moe::plot {

Rgb mix(Rgb a, Rgb b, double t) {
  t = std::clamp(t, 0.0, 1.0);
  auto channel = [t](uint8_t from, uint8_t to) {
    return static_cast<uint8_t>(std::lround(from + t * (static_cast<double>(to) - from)));
  };
  return {channel(a.r, b.r), channel(a.g, b.g), channel(a.b, b.b)};
}

RgbImage::RgbImage(int width, int height, Rgb background) : width_(width), height_(height) {
  MOE_CHECK(width > 0 && height > 0 && width <= 16384 && height <= 16384, "image size ", width,
            " x ", height, " is outside 1..16384");
  pixels_.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
  fill_rect(0, 0, width, height, background);
}

Rgb RgbImage::at(int x, int y) const {
  MOE_CHECK(contains(x, y), "pixel (", x, ", ", y, ") is outside the ", width_, " x ", height_,
            " image");
  const size_t i =
      (static_cast<size_t>(y) * static_cast<size_t>(width_) + static_cast<size_t>(x)) * 3;
  return {pixels_[i], pixels_[i + 1], pixels_[i + 2]};
}

void RgbImage::set(int x, int y, Rgb colour) {
  if (!contains(x, y)) return;
  const size_t i =
      (static_cast<size_t>(y) * static_cast<size_t>(width_) + static_cast<size_t>(x)) * 3;
  pixels_[i] = colour.r;
  pixels_[i + 1] = colour.g;
  pixels_[i + 2] = colour.b;
}

void RgbImage::fill_rect(int x0, int y0, int x1, int y1, Rgb colour) {
  x0 = std::max(x0, 0), y0 = std::max(y0, 0);
  x1 = std::min(x1, width_), y1 = std::min(y1, height_);
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) set(x, y, colour);
}

void RgbImage::draw_rect(int x0, int y0, int x1, int y1, Rgb colour) {
  if (x1 <= x0 || y1 <= y0) return;
  fill_rect(x0, y0, x1, y0 + 1, colour);
  fill_rect(x0, y1 - 1, x1, y1, colour);
  fill_rect(x0, y0, x0 + 1, y1, colour);
  fill_rect(x1 - 1, y0, x1, y1, colour);
}

void RgbImage::draw_line(int x0, int y0, int x1, int y1, Rgb colour, int thickness) {
  thickness = std::max(thickness, 1);
  const int before = (thickness - 1) / 2;  // brush cells left of / above the walked pixel
  auto brush = [&](int x, int y) {
    fill_rect(x - before, y - before, x - before + thickness, y - before + thickness, colour);
  };
  // Bresenham's line walk over all octants: err tracks dx * (y - y_line) - dy * (x - x_line).
  const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
  const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for (;;) {
    brush(x0, y0);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) err += dy, x0 += sx;
    if (e2 <= dx) err += dx, y0 += sy;
  }
}

std::vector<uint8_t> encode_png(const RgbImage& image) {
  // libpng's simplified API: no setjmp/longjmp crosses C++ frames; errors come back in
  // png.message.
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width());
  png.height = static_cast<png_uint_32>(image.height());
  png.format = PNG_FORMAT_RGB;
  const png_int_32 stride = image.width() * 3;
  png_alloc_size_t bytes = 0;
  // First call sizes the output, the second writes it.
  MOE_CHECK(
      png_image_write_to_memory(&png, nullptr, &bytes, 0, image.bytes().data(), stride, nullptr),
      "PNG encoding failed: ", png.message);
  std::vector<uint8_t> out(bytes);
  MOE_CHECK(
      png_image_write_to_memory(&png, out.data(), &bytes, 0, image.bytes().data(), stride, nullptr),
      "PNG encoding failed: ", png.message);
  out.resize(bytes);
  return out;
}

void write_png(const RgbImage& image, const std::string& path) {
  const std::vector<uint8_t> bytes = encode_png(image);
  io::AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

}  // namespace moe::plot
