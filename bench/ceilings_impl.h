// Template definitions for ceilings.h.
#pragma once

#include <algorithm>
#include <vector>

#include "moe/core/timer.h"

namespace moe::bench {

template <class Fn>
double median_ms(Device device, int warmup, int iters, Fn&& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  DeviceTimer timer(device);
  timer.record();
  for (int i = 0; i < iters; ++i) {
    fn();
    timer.record();
  }
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) times.push_back(timer.elapsed_ms(i, i + 1));
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

}  // namespace moe::bench
