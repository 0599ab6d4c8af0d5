// The device's side of a profile: what ran on the GPU while recording (kernels, copies, memsets,
// each with its begin and end on the host's trace clock, core/trace_recorder.h), from CUPTI's
// activity API, the CUDA toolkit's tracing library that Nsight Systems and PyTorch's profiler
// are built on. Each record also says when the host asked for it (the launching API call) and
// from inside which recorded TraceRange (CUPTI's external correlation ids carry the range's span
// id), so a timeline can say which stage a kernel belongs to and whether the GPU waited on the
// host.
//
// CUPTI is loaded when a recording starts (dlopen), not linked: a machine without it still runs
// moecore, and start() says why nothing is recorded. A CPU build records nothing either. Like the
// host recorder there is one recording per process.
//
// The capture range of an outside profiler (Nsight Systems' --capture-range=cudaProfilerApi,
// what Megatron's --profile drives) is start_profiler_capture() / stop_profiler_capture().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct DeviceActivity {
  enum class Kind { kernel, memcpy, memset };
  Kind kind = Kind::kernel;
  std::string name;  // a kernel's demangled name without its parameters; "memcpy HtoD", "memset"
  int64_t begin_ns = 0;  // trace_clock_ns() axis
  int64_t end_ns = 0;
  int device = 0;
  uint32_t stream = 0;
  int64_t bytes = 0;       // copies and memsets
  int64_t launch_ns = -1;  // when the API call that queued it began (-1: not recorded)
  uint64_t range_id = 0;   // the innermost recorded TraceRange around that call (0: none)
};

class DeviceActivityRecorder {
 public:
  // Begins recording the device's activity and tagging launches with the host recorder's range
  // ids (start TraceRecorder first). Returns "" when recording, else why not (a CPU build, CUPTI
  // not found or refused, a recording in progress).
  static std::string start();
  // Waits for the device's work, ends the recording and returns its records sorted by begin time
  // (empty when start() did not record). `dropped` (if given) gets the records CUPTI lost for
  // want of buffer space.
  static std::vector<DeviceActivity> stop(int64_t* dropped = nullptr);
};

// cudaProfilerStart / cudaProfilerStop on the current device (no effect in a CPU build).
void start_profiler_capture();
void stop_profiler_capture();

}  // namespace moe
