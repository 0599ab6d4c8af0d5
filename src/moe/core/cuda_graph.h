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
// Graphs may share one pool (GraphMemoryPool): graphs replayed one after another on one stream,
// each capture taking the blocks the captures before it freed, so their temporaries share
// memory. That is safe when no graph reads memory that a graph captured before it freed, in
// between its replay and its reader's: the caller's order of replays must say so (per-layer
// graphs: nn/layer_graphs.h).
// A build without CUDA throws on capture().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "moe/core/device.h"

struct CUgraphExec_st;

namespace moe {

// One private pool of the caching allocator (core/allocator.h), released when the last graph
// holding it is gone.
class GraphMemoryPool {
 public:
  GraphMemoryPool();
  ~GraphMemoryPool();
  GraphMemoryPool(const GraphMemoryPool&) = delete;
  GraphMemoryPool& operator=(const GraphMemoryPool&) = delete;
  uint64_t id() const { return id_; }
  // Bytes the pool holds from the driver (held by tensors or cached in it).
  int64_t bytes() const;

 private:
  uint64_t id_;
};

class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();
  CudaGraph(CudaGraph&& other) noexcept;
  CudaGraph& operator=(CudaGraph&& other) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Captures what f() queues on the current stream of `device` (a graph captures once), its
  // memory from `pool` (shared with other graphs; null: a pool of its own). Throws moe::Error
  // with what failed (f's error, or the CUDA error of a call that cannot be captured); the
  // graph then holds nothing.
  void capture(Device device, const std::function<void()>& f,
               std::shared_ptr<GraphMemoryPool> pool = nullptr);
  // Runs the captured work on the current stream of its device (asynchronous, as the work
  // would have been).
  void replay() const;
  bool captured() const { return exec_ != nullptr; }
  // Bytes of device memory the graph's pool holds (the memory the graph costs; with a shared
  // pool, what all its graphs cost).
  int64_t pool_bytes() const;

 private:
  void reset() noexcept;

  CUgraphExec_st* exec_ = nullptr;
  std::shared_ptr<GraphMemoryPool> pool_;
  int device_ = -1;
};

}  // namespace moe
