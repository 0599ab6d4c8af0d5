// Shared pieces of the plot tests: a fresh temporary folder per test, and the count of text
// pixels in a region of a decoded chart.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "plot/png_testing.h"

namespace moe::test {

inline std::filesystem::path fresh_plot_dir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("moe_plot_" + std::to_string(getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Dark pixels (text, frame: every channel below 100) in [x0, x1) x [y0, y1), clipped to the image.
inline int ink_in(const DecodedPng& png, int x0, int y0, int x1, int y1) {
  int n = 0;
  for (int y = std::max(y0, 0); y < std::min(y1, png.height); ++y)
    for (int x = std::max(x0, 0); x < std::min(x1, png.width); ++x) {
      const plot::Rgb c = png.at(x, y);
      n += c.r < 100 && c.g < 100 && c.b < 100;
    }
  return n;
}

}  // namespace moe::test
