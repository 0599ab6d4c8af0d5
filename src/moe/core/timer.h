// Timestamps on a device's timeline: CUDA events on the current stream for CUDA devices (so
// queued work is timed where it runs, not where it was launched), the host clock for the CPU.
// Used by benchmarks and by stage profiling; reading the times synchronises.
#pragma once

#include <chrono>
#include <vector>

#include "moe/core/device.h"

namespace moe {

class DeviceTimer {
 public:
  explicit DeviceTimer(Device device) : device_(device) {}
  ~DeviceTimer();
  DeviceTimer(const DeviceTimer&) = delete;
  DeviceTimer& operator=(const DeviceTimer&) = delete;

  void record();                          // appends a timestamp
  size_t size() const { return count_; }  // timestamps recorded since reset()
  double elapsed_ms(size_t from, size_t to);  // between two timestamps (synchronises)
  void reset() { count_ = 0; }

 private:
  Device device_;
  size_t count_ = 0;
  std::vector<void*> events_;  // cudaEvent_t, reused across resets
  std::vector<std::chrono::steady_clock::time_point> host_times_;
};

}  // namespace moe
