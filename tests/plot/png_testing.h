// The plot tests read charts back the way any viewer would: the PNG file decoded by libpng
// (simplified read API, RGB8), independent of the encoder in plot/png_image.cpp.
#pragma once

#include <png.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe/plot/png_image.h"

namespace moe::test {

struct DecodedPng {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // row-major, 3 bytes per pixel
  plot::Rgb at(int x, int y) const {
    const size_t i =
        (static_cast<size_t>(y) * static_cast<size_t>(width) + static_cast<size_t>(x)) * 3;
    return {rgb.at(i), rgb.at(i + 1), rgb.at(i + 2)};
  }
};

inline DecodedPng decode_png(const std::string& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str()))
    throw std::runtime_error("libpng cannot read " + path + ": " + image.message);
  image.format = PNG_FORMAT_RGB;
  DecodedPng out;
  out.width = static_cast<int>(image.width);
  out.height = static_cast<int>(image.height);
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr))
    throw std::runtime_error("libpng cannot decode " + path + ": " + image.message);
  return out;
}

}  // namespace moe::test
