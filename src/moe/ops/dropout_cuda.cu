// CUDA dropout: one thread per element (grid-stride), the mask bits of dropout.h from the
// element's global index, so the CPU reference (dropout_cpu.cpp) and these kernels agree bit for
// bit. Memory-bound: one read and one write per element, the Philox rounds are integer work
// that overlaps the loads.
#include "moe/core/cuda_utils.h"
#include "moe/ops/dropout_cuda.h"
#include "moe/ops/row_kernels_cuda.cuh"

namespace moe::ops::detail {
namespace {

constexpr int kThreads = 256;

struct Layout {
  int64_t n;  // S * B * F
  int64_t batch;
  int64_t features;
  uint64_t seq_total;  // the global S (dropout.h)
  int64_t seq_offset;
  uint64_t key;
  int64_t first_sample;
  float p;
};

// The global index (dropout.h) of the element at flat offset e of an [S, B, F] tensor.
__device__ __forceinline__ uint64_t global_index(const Layout& l, int64_t e) {
  const int64_t f = e % l.features;
  const int64_t sb = e / l.features;
  const int64_t b = sb % l.batch;
  const int64_t s = sb / l.batch;
  return dropout_token_index(l.first_sample, l.seq_offset, l.seq_total,
                             static_cast<uint64_t>(l.features), b, s, f);
}

template <class T>
__global__ void dropout_kernel(const T* x, T* y, Layout l, Acc<T> scale) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < l.n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const bool keep = dropout_keep(l.key, global_index(l, e), l.p);
    from_acc(y[e], keep ? to_acc(x[e]) * scale : Acc<T>(0));
  }
}

__global__ void dropout_mask_kernel(uint8_t* mask, Layout l) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < l.n;
       e += int64_t(gridDim.x) * blockDim.x)
    mask[e] = dropout_keep(l.key, global_index(l, e), l.p) ? 1 : 0;
}

Layout layout_of(const Shape& shape, const DropoutArgs& args) {
  Layout l{};
  l.seq_total = static_cast<uint64_t>(args.global_seq(shape[0]));
  l.seq_offset = args.seq_offset;
  l.batch = shape[1];
  l.features = shape[2];
  l.n = shape[0] * shape[1] * shape[2];
  l.key = args.key;
  l.first_sample = args.first_sample;
  l.p = static_cast<float>(args.p);
  return l;
}

}  // namespace

void dropout_cuda(const Tensor& x, Tensor& y, const DropoutArgs& args, double scale) {
  const Layout l = layout_of(x.shape(), args);
  if (l.n == 0) return;
  cudaStream_t stream = cuda::stream_of(x);
  dispatch_float(x.dtype(), "dropout", [&]<class T>() {
    dropout_kernel<T><<<cuda::blocks_for(l.n, kThreads), kThreads, 0, stream>>>(
        x.data<T>(), y.data<T>(), l, static_cast<Acc<T>>(scale));
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void dropout_mask_cuda(Tensor& mask, const DropoutArgs& args) {
  const Layout l = layout_of(mask.shape(), args);
  if (l.n == 0) return;
  dropout_mask_kernel<<<cuda::blocks_for(l.n, kThreads), kThreads, 0, cuda::stream_of(mask)>>>(
      mask.data<uint8_t>(), l);
  MOE_CUDA_CHECK_LAUNCH();
}

}  // namespace moe::ops::detail
