// CUDA half of the Local backend's reduction (local_reduce.h): one thread per element walks
// the ranks in order, so the result is bitwise that of the CPU loop.
#include "moe/core/cuda_utils.h"
#include "moe/dist/local_reduce.h"

namespace moe::dist::detail {
namespace {

template <class T>
__global__ void reduce_rows_kernel(const T* staging, int num_ranks, int64_t n, T* out,
                                   ReduceOp op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = reduce_over_ranks<T>(op, num_ranks,
                                  [&](int r) { return staging[static_cast<int64_t>(r) * n + i]; });
  }
}

constexpr int kThreads = 256;

}  // namespace

void local_reduce_cuda(const Tensor& staging, Tensor& out, ReduceOp op) {
  const int64_t n = out.numel();
  MOE_CHECK(staging.dim() == 2 && staging.size(1) == n && staging.size(0) >= 1,
            "local_reduce_cuda: staging ", shape_str(staging.shape()), " for ", n, " elements");
  MOE_CHECK(staging.dtype() == out.dtype() && staging.device() == out.device(),
            "local_reduce_cuda: staging ", staging.str(), " and out ", out.str());
  if (n == 0) return;
  cudaStream_t stream = cuda::stream_of(out);
  const int num_ranks = static_cast<int>(staging.size(0));
  dispatch<DType::f64, DType::f32, DType::bf16, DType::f16, DType::i64, DType::i32>(
      out.dtype(), "reduction (CUDA)", [&]<class T>() {
        reduce_rows_kernel<T><<<cuda::blocks_for(n, kThreads), kThreads, 0, stream>>>(
            staging.data<T>(), num_ranks, n, out.data<T>(), op);
        MOE_CUDA_CHECK_LAUNCH();
      });
}

}  // namespace moe::dist::detail
