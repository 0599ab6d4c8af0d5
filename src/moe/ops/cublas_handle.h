// cuBLAS / cuBLASLt handles and their workspace, cached per host thread and device (internal:
// included by CUDA translation units only).
//
// Why per thread: a cuBLAS handle is not safe to use from two threads at once, and the ranks of
// the Local process-group backend are threads. Why a workspace per (device, stream): two streams
// of one thread may run GEMMs concurrently, and a workspace shared between them would race
// (split-K partials, grouped-GEMM argument tables). Workspaces come from the caching allocator
// (Tensor::empty), once per stream, and live until the thread exits.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "moe/core/dtype.h"
#include "moe/core/error.h"

// Checks a cublasStatus_t (cuBLAS and cuBLASLt share the type) and names the failing call.
#define MOE_CUBLAS_CHECK(expr)                                                            \
  do {                                                                                    \
    cublasStatus_t moe_blas_status_ = (expr);                                             \
    MOE_CHECK(moe_blas_status_ == CUBLAS_STATUS_SUCCESS, "cuBLAS error in ", #expr, ": ", \
              cublasGetStatusName(moe_blas_status_), " (",                                \
              cublasGetStatusString(moe_blas_status_), ")");                              \
  } while (0)

namespace moe::cuda {

// The cuBLAS data type of a floating dtype; `what` names the caller in the error.
inline cudaDataType_t blas_dtype(DType dtype, const char* what) {
  switch (dtype) {
    case DType::f64: return CUDA_R_64F;
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: MOE_FAIL(what, ": dtype ", dtype, " has no cuBLAS type");
  }
}

// 32 MiB: enough for cuBLASLt's split-K and stream-K kernels on Hopper at any shape we run
// (NVIDIA recommends >= 32 MiB on sm_90), and for cublasGemmGroupedBatchedEx's tables.
inline constexpr size_t kBlasWorkspaceBytes = size_t{32} << 20;

struct BlasWorkspace {
  void* data = nullptr;
  size_t bytes = 0;
};

// The calling thread's cuBLASLt handle for `device` (created on first use; `device` must be
// the current device, as cuda::stream_of() leaves it).
cublasLtHandle_t cublaslt_handle(int device);

// The calling thread's workspace for work queued on `stream` of `device`.
BlasWorkspace blas_workspace(int device, cudaStream_t stream);

// The calling thread's cuBLAS handle for `device`, bound to `stream` and to that stream's
// workspace (rebound only when the stream changes: cublasSetStream resets the workspace).
cublasHandle_t cublas_handle(int device, cudaStream_t stream);

}  // namespace moe::cuda
