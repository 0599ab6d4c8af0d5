// Named ranges of a run for profilers: NVTX ranges (Nsight Systems shows them on the host's
// timeline, above the kernels they launched) in a CUDA build, and spans of moecore's own
// recorder while it records (core/trace_recorder.h: `moe train --profile`). Ranges nest;
// moecore marks the stages a user looks for in a step: the forward and backward of each layer,
// attention, the MoE layer's route / dispatch / experts / combine, the communication of
// gradients and pipeline stages, and the optimizer. They cost a function call each (NVTX does
// nothing until a profiler attaches, the recorder nothing until it starts). `name` is copied
// only while recording.
#pragma once

#include <utility>

namespace moe {

class TraceRange {
 public:
  explicit TraceRange(const char* name);
  ~TraceRange();
  TraceRange(const TraceRange&) = delete;
  TraceRange& operator=(const TraceRange&) = delete;
};

// f() inside a range named `name`; returns what f returns.
template <class F>
decltype(auto) traced(const char* name, F&& f) {
  const TraceRange range(name);
  return std::forward<F>(f)();
}

}  // namespace moe
