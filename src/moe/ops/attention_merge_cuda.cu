// CUDA merge of partial attention (attention_merge.h): one pass over the block's rows, a group of
// threads per [Dv] row (row_launch) with 16-byte packed loads and stores when Dv allows, f32
// math, the CPU reference's rule and operation order (attention_merge_rule.h). Each element is
// read and written by one thread and each lse by its row's first lane: no atomics, so the result
// is deterministic.
#include "moe/core/cuda_utils.h"
#include "moe/ops/attention_merge_cuda.h"
#include "moe/ops/attention_merge_rule.h"
#include "moe/ops/row_kernels_cuda.cuh"

namespace moe::ops::detail {
namespace {

// Rows in out_b's memory order, so both out tensors stream through contiguous [Dv] vectors.
// No early return before the barrier: it keeps a row's lanes from reading lse_acc after its
// first lane has overwritten it (a row may span several warps).
template <class T, int N>
__global__ void attention_merge_kernel(T* __restrict__ out_acc, Acc<T>* __restrict__ lse_acc,
                                       const T* __restrict__ out_b,
                                       const Acc<T>* __restrict__ lse_b, MergeShape shape,
                                       int threads_per_row) {
  using A = Acc<T>;
  const int64_t r =
      int64_t(blockIdx.x) * (blockDim.x / threads_per_row) + threadIdx.x / threads_per_row;
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  const bool active = r < shape.rows();
  MergeRow row{};
  MergeWeights<A> w{};
  if (active) {
    row = merge_row(shape, r);
    w = merge_weights(lse_acc[row.lse_acc], lse_b[row.lse_b]);
  }
  __syncthreads();
  if (!active) return;
  const int64_t dv = shape.v_head_dim;
  T* acc = out_acc + row.acc_row * dv;
  const T* blk = out_b + r * dv;
  for (int64_t c = int64_t(lane) * N; c < dv; c += int64_t(threads_per_row) * N) {
    Pack<T, N> a = load_pack<N>(acc + c);
    const Pack<T, N> b = load_pack<N>(blk + c);
#pragma unroll
    for (int i = 0; i < N; ++i) from_acc(a.v[i], merge_value(w, to_acc(a.v[i]), to_acc(b.v[i])));
    store_pack<N>(acc + c, a);
  }
  if (lane == 0) lse_acc[row.lse_acc] = w.lse;
}

}  // namespace

void attention_merge_cuda(Tensor& out_acc, Tensor& lse_acc, const Tensor& out_b,
                          const Tensor& lse_b, const MergeShape& shape) {
  const int64_t rows = shape.rows();
  if (rows == 0) return;
  cudaStream_t stream = cuda::stream_of(out_acc);
  dispatch<DType::f32, DType::bf16>(out_acc.dtype(), "attention_merge_ (CUDA)", [&]<class T>() {
    using A = Acc<T>;
    const auto launch = [&]<int N>() {
      const RowLaunch rl = row_launch(rows, (shape.v_head_dim + N - 1) / N);
      attention_merge_kernel<T, N><<<rl.blocks, kRowBlock, 0, stream>>>(
          out_acc.data<T>(), lse_acc.data<A>(), out_b.data<T>(), lse_b.data<A>(), shape,
          rl.threads_per_row);
      MOE_CUDA_CHECK_LAUNCH();
    };
    // 16-byte packs when every row start is 16-byte aligned (row starts are multiples of Dv).
    constexpr int kN = kPack16<T>;
    if (shape.v_head_dim % kN == 0 && aligned_to(out_acc.raw(), 16) && aligned_to(out_b.raw(), 16))
      launch.template operator()<kN>();
    else
      launch.template operator()<1>();
  });
}

}  // namespace moe::ops::detail
