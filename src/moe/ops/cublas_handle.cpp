// Per-thread, per-device cuBLAS / cuBLASLt handles and per-stream workspaces (see the header).
#if MOE_WITH_CUDA

#include "moe/ops/cublas_handle.h"

#include <map>
#include <utility>

#include "moe/core/tensor.h"

namespace moe::cuda {
namespace {

struct ThreadBlas {
  struct BoundHandle {
    cublasHandle_t handle = nullptr;
    cudaStream_t stream = nullptr;
    bool bound = false;  // whether `stream` (possibly the legacy null stream) is set
  };
  std::map<int, cublasLtHandle_t> lt;
  std::map<int, BoundHandle> blas;
  std::map<std::pair<int, cudaStream_t>, Tensor> workspaces;

  ~ThreadBlas() {
    // Statuses are ignored: at process exit the driver may already be tearing down.
    for (auto& [device, handle] : lt) (void)cublasLtDestroy(handle);
    for (auto& [device, bound] : blas) (void)cublasDestroy(bound.handle);
    // `workspaces` is released after this body: the blocks return to the caching allocator.
  }
};

thread_local ThreadBlas tls_blas;

}  // namespace

cublasLtHandle_t cublaslt_handle(int device) {
  auto it = tls_blas.lt.find(device);
  if (it != tls_blas.lt.end()) return it->second;
  cublasLtHandle_t handle = nullptr;
  MOE_CUBLAS_CHECK(cublasLtCreate(&handle));
  tls_blas.lt.emplace(device, handle);
  return handle;
}

BlasWorkspace blas_workspace(int device, cudaStream_t stream) {
  auto key = std::make_pair(device, stream);
  auto it = tls_blas.workspaces.find(key);
  if (it == tls_blas.workspaces.end()) {
    Tensor workspace =
        Tensor::empty({static_cast<int64_t>(kBlasWorkspaceBytes)}, DType::u8, Device::cuda(device));
    it = tls_blas.workspaces.emplace(key, std::move(workspace)).first;
  }
  return {it->second.raw(), kBlasWorkspaceBytes};
}

cublasHandle_t cublas_handle(int device, cudaStream_t stream) {
  auto it = tls_blas.blas.find(device);
  if (it == tls_blas.blas.end()) {
    ThreadBlas::BoundHandle bound;
    MOE_CUBLAS_CHECK(cublasCreate(&bound.handle));
    // Host scalars (alpha/beta arrays live on the host), and no TF32 unless asked for by a
    // compute type: the f32 path must be true fp32.
    MOE_CUBLAS_CHECK(cublasSetPointerMode(bound.handle, CUBLAS_POINTER_MODE_HOST));
    MOE_CUBLAS_CHECK(cublasSetMathMode(bound.handle, CUBLAS_DEFAULT_MATH));
    it = tls_blas.blas.emplace(device, bound).first;
  }
  ThreadBlas::BoundHandle& bound = it->second;
  if (!bound.bound || bound.stream != stream) {
    const BlasWorkspace workspace = blas_workspace(device, stream);
    MOE_CUBLAS_CHECK(cublasSetStream(bound.handle, stream));
    // After cublasSetStream: it resets the workspace to cuBLAS's default pool.
    MOE_CUBLAS_CHECK(cublasSetWorkspace(bound.handle, workspace.data, workspace.bytes));
    bound.stream = stream;
    bound.bound = true;
  }
  return bound.handle;
}

}  // namespace moe::cuda

#endif  // MOE_WITH_CUDA
