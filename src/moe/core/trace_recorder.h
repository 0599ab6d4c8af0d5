// The host's side of a profile: while recording, every TraceRange (core/trace_range.h) that
// closes leaves a span (name, thread, nesting depth, begin and end on trace_clock_ns()), so a
// run can draw its own timeline and say which stage the host was in at any instant, without
// Nsight Systems. Outside a recording a range costs one relaxed atomic load more than its NVTX
// push.
//
// The recorder is one per process: the ranks of a process (Local threads) share it, and a second
// start() while one records is refused (start returns false) rather than mixing two windows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

// Nanoseconds on the host's monotonic clock (std::chrono::steady_clock); the device activity
// (core/device_activity.h) is converted onto the same axis.
int64_t trace_clock_ns();

struct TraceSpan {
  std::string name;
  int64_t begin_ns = 0;
  int64_t end_ns = 0;
  int thread = 0;   // a small number per host thread, in order of first use (0 for the first)
  int depth = 0;    // ranges open on that thread around this one
  uint64_t id = 0;  // unique within the recording, from 1, in order of opening
};

// Called when a recorded range opens (with its span's id) and when it closes, on the thread of
// the range: the device activity recorder tags the launches made inside with the id.
struct TraceRangeHooks {
  void (*on_open)(uint64_t id) = nullptr;
  void (*on_close)() = nullptr;
};

class TraceRecorder {
 public:
  // Begins a recording; false (nothing changes) while another is in progress.
  static bool start();
  // Ends the recording and returns its spans, sorted by begin time. Ranges still open at stop()
  // are left out.
  static std::vector<TraceSpan> stop();
  static bool recording();
  // Hooks for the ranges opened from now on (core/device_activity.h sets and clears them).
  static void set_hooks(TraceRangeHooks hooks);

  // Called by TraceRange: open and close a range on this thread (no effect unless recording;
  // a close whose open was before start() is ignored).
  static void open(const char* name);
  static void close();
};

}  // namespace moe
