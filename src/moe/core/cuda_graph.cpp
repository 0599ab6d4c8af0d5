// CudaGraph (cuda_graph.h) over the CUDA runtime's stream capture.
#include "moe/core/cuda_graph.h"

#include <string>
#include <utility>

#include "moe/core/allocator.h"
#include "moe/core/error.h"
#include "moe/core/stream.h"

#if MOE_WITH_CUDA
#include <cuda_runtime.h>

#include "moe/core/cuda_utils.h"
#endif

namespace moe {

GraphMemoryPool::GraphMemoryPool() : id_(create_memory_pool()) {}

GraphMemoryPool::~GraphMemoryPool() {
  release_memory_pool(id_);
}

int64_t GraphMemoryPool::bytes() const {
  return memory_pool_bytes(id_);
}

CudaGraph::~CudaGraph() {
  reset();
}

CudaGraph::CudaGraph(CudaGraph&& other) noexcept
    : exec_(std::exchange(other.exec_, nullptr)),
      pool_(std::move(other.pool_)),
      device_(std::exchange(other.device_, -1)) {}

CudaGraph& CudaGraph::operator=(CudaGraph&& other) noexcept {
  if (this != &other) {
    reset();
    exec_ = std::exchange(other.exec_, nullptr);
    pool_ = std::move(other.pool_);
    device_ = std::exchange(other.device_, -1);
  }
  return *this;
}

void CudaGraph::reset() noexcept {
#if MOE_WITH_CUDA
  if (exec_ != nullptr) (void)cudaGraphExecDestroy(reinterpret_cast<cudaGraphExec_t>(exec_));
#endif
  exec_ = nullptr;
  pool_.reset();
  device_ = -1;
}

int64_t CudaGraph::pool_bytes() const {
  return pool_ ? pool_->bytes() : 0;
}

#if MOE_WITH_CUDA

void CudaGraph::capture(Device device, const std::function<void()>& f,
                        std::shared_ptr<GraphMemoryPool> pool) {
  MOE_CHECK(device.is_cuda(), "CudaGraph::capture: ", device, " is not a GPU");
  MOE_CHECK(exec_ == nullptr, "CudaGraph::capture: this graph was captured already");
  const StreamHandle handle = current_stream(device.index);
  const auto stream = reinterpret_cast<cudaStream_t>(handle);
  // Work queued before the capture is not part of it and must not be pending inside it.
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  pool_ = pool ? std::move(pool) : std::make_shared<GraphMemoryPool>();
  device_ = device.index;
  set_allocation_pool(device.index, handle, pool_->id());
  std::string failure;
  cudaError_t begun = cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed);
  if (begun == cudaSuccess) {
    try {
      f();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  } else {
    failure = std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(begun);
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended =
      begun == cudaSuccess ? cudaStreamEndCapture(stream, &graph) : cudaErrorUnknown;
  set_allocation_pool(device.index, handle, 0);
  if (failure.empty() && ended != cudaSuccess)
    failure = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(ended) +
              " (the captured work synchronised with the host, or used another stream without "
              "joining it back)";
  cudaGraphExec_t exec = nullptr;
  if (failure.empty()) {
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
    if (made != cudaSuccess)
      failure = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(made);
  }
  if (graph != nullptr) (void)cudaGraphDestroy(graph);
  (void)cudaGetLastError();  // a failed capture leaves its error behind
  if (!failure.empty()) {
    reset();
    MOE_FAIL("CUDA graph capture failed: ", failure);
  }
  exec_ = reinterpret_cast<CUgraphExec_st*>(exec);
}

void CudaGraph::replay() const {
  MOE_CHECK(exec_ != nullptr, "CudaGraph::replay: nothing was captured");
  const auto stream = reinterpret_cast<cudaStream_t>(current_stream(device_));
  MOE_CUDA_CHECK(cudaGraphLaunch(reinterpret_cast<cudaGraphExec_t>(exec_), stream));
}

#else

void CudaGraph::capture(Device device, const std::function<void()>&,
                        std::shared_ptr<GraphMemoryPool>) {
  MOE_FAIL("CudaGraph::capture on ", device, ": this build has no CUDA");
}

void CudaGraph::replay() const {
  MOE_FAIL("CudaGraph::replay: this build has no CUDA");
}

#endif

}  // namespace moe
