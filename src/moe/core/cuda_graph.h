// One CUDA graph: the work a function queues on a device's current stream, captured once and
// replayed, so a step whose shapes do not change costs one launch instead of thousands (the
// host's launch rate, not the GPU, bounds a step of many small kernels: docs/perf.md).
//
// Capture runs the function with the stream in capture mode (relaxed: allocations may call
// cudaMalloc): its kernels and copies are recorded, not run. Whatever synchronises with the host
// (a device-to-host read, a stream wait) cannot be captured: the capture then fails and
// capture() throws, naming the call. The memory the function allocates comes from the graph's
// private pool (core/allocator.h), kept until the graph is destroyed, so a replay's writes land
// where the capture put them and nowhere else; tensors the function returns (outputs) live in
// that pool and a replay overwrites them. Inputs are read where they were at capture: copy new
// values into the same tensors before each replay. Host state the function reads or changes
// (counters, flags) is frozen into the graph as its value at capture.
// A build without CUDA throws on capture().
#pragma once

#include <cstdint>
#include <functional>

#include "moe/core/device.h"

struct CUgraphExec_st;

namespace moe {

class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();
  CudaGraph(CudaGraph&& other) noexcept;
  CudaGraph& operator=(CudaGraph&& other) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Captures what f() queues on the current stream of `device` (a graph captures once). Throws
  // moe::Error with what failed (f's error, or the CUDA error of a call that cannot be
  // captured); the graph then holds nothing.
  void capture(Device device, const std::function<void()>& f);
  // Runs the captured work on the current stream of its device (asynchronous, as the work
  // would have been).
  void replay() const;
  bool captured() const { return exec_ != nullptr; }
  // Bytes of device memory the graph's pool holds (the memory the graph costs).
  int64_t pool_bytes() const;

 private:
  void reset() noexcept;

  CUgraphExec_st* exec_ = nullptr;
  uint64_t pool_ = 0;
  int device_ = -1;
};

}  // namespace moe
