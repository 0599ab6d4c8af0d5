// CUDA MLA key/value expansion (formulas in rope_mla.h). The forward and the grad_kv part of
// the backward are pure copies: one grid-stride loop over the output elements, consecutive
// threads on consecutive features, so reads and writes are coalesced. The k_pe gradient sums
// the heads in a fixed order per (token, feature): deterministic, no atomics.
#include "moe/core/cuda_utils.h"
#include "moe/ops/rope_mla_cuda.h"
#include "moe/ops/row_kernels_cuda.cuh"

namespace moe::ops::detail {
namespace {

constexpr int kThreads = 256;

// One item per element of k ([tokens, heads, dn + dr]) followed by one per element of v.
template <class T>
__global__ void expand_kv_kernel(const T* __restrict__ kv, const T* __restrict__ k_pe,
                                 T* __restrict__ k, T* __restrict__ v, MlaKvLaunch l) {
  const int64_t dn = l.nope_dim, dr = l.rope_dim, dv = l.v_dim;
  const int64_t k_items = l.tokens * l.heads * (dn + dr);
  const int64_t items = k_items + l.tokens * l.heads * dv;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < k_items) {
      const int64_t row = i / (dn + dr), j = i - row * (dn + dr);  // row = token * heads + h
      k[i] = j < dn ? kv[row * (dn + dv) + j] : k_pe[(row / l.heads) * dr + (j - dn)];
    } else {
      const int64_t e = i - k_items;
      const int64_t row = e / dv, j = e - row * dv;
      v[e] = kv[row * (dn + dv) + dn + j];
    }
  }
}

// One item per element of grad_kv ([tokens, heads, dn + dv]).
template <class T>
__global__ void expand_kv_grad_kernel(const T* __restrict__ grad_k, const T* __restrict__ grad_v,
                                      T* __restrict__ grad_kv, MlaKvLaunch l) {
  const int64_t dn = l.nope_dim, dr = l.rope_dim, dv = l.v_dim;
  const int64_t items = l.tokens * l.heads * (dn + dv);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / (dn + dv), j = i - row * (dn + dv);
    grad_kv[i] = j < dn ? grad_k[row * (dn + dr) + j] : grad_v[row * dv + (j - dn)];
  }
}

// One item per element of grad_k_pe ([tokens, dr]): the sum over heads, in head order.
template <class T>
__global__ void k_pe_grad_kernel(const T* __restrict__ grad_k, T* __restrict__ grad_k_pe,
                                 MlaKvLaunch l) {
  const int64_t dn = l.nope_dim, dr = l.rope_dim;
  const int64_t items = l.tokens * dr;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t token = i / dr, j = i - token * dr;
    const T* src = grad_k + token * l.heads * (dn + dr) + dn + j;
    Acc<T> sum = 0;
    for (int64_t h = 0; h < l.heads; ++h) sum += to_acc(src[h * (dn + dr)]);
    from_acc(grad_k_pe[i], sum);
  }
}

}  // namespace

void mla_expand_kv_forward_cuda(const Tensor& kv, const Tensor& k_pe, const MlaKvLaunch& l,
                                Tensor& k, Tensor& v) {
  const int64_t items = l.tokens * l.heads * (l.nope_dim + l.rope_dim + l.v_dim);
  if (items == 0) return;
  cudaStream_t stream = cuda::stream_of(kv);
  dispatch_float(kv.dtype(), "mla_expand_kv_forward", [&]<class T>() {
    expand_kv_kernel<T><<<cuda::blocks_for(items, kThreads), kThreads, 0, stream>>>(
        kv.data<T>(), k_pe.data<T>(), k.data<T>(), v.data<T>(), l);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void mla_expand_kv_backward_cuda(const Tensor& grad_k, const Tensor& grad_v, const MlaKvLaunch& l,
                                 Tensor& grad_kv, Tensor& grad_k_pe) {
  if (l.tokens == 0 || l.heads == 0) return;
  cudaStream_t stream = cuda::stream_of(grad_k);
  const int64_t kv_items = l.tokens * l.heads * (l.nope_dim + l.v_dim);
  const int64_t pe_items = l.tokens * l.rope_dim;
  dispatch_float(grad_k.dtype(), "mla_expand_kv_backward", [&]<class T>() {
    expand_kv_grad_kernel<T><<<cuda::blocks_for(kv_items, kThreads), kThreads, 0, stream>>>(
        grad_k.data<T>(), grad_v.data<T>(), grad_kv.data<T>(), l);
    MOE_CUDA_CHECK_LAUNCH();
    k_pe_grad_kernel<T><<<cuda::blocks_for(pe_items, kThreads), kThreads, 0, stream>>>(
        grad_k.data<T>(), grad_k_pe.data<T>(), l);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::ops::detail
