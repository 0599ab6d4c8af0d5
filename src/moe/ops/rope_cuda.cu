// CUDA rotary embeddings. One block per token: its threads first compute the token's Dr/2
// cos/sin values (fp32, fp64 for f64) into shared memory, then rotate every head's pairs and
// copy the pass-through features. Consecutive threads take consecutive pairs of a head, so the
// reads and writes of a warp are contiguous (half layouts) or within the same lines
// (interleaved). No reductions: deterministic.
#include <algorithm>

#include "moe/core/cuda_utils.h"
#include "moe/ops/rope_cuda.h"
#include "moe/ops/rope_pairs.h"
#include "moe/ops/row_kernels_cuda.cuh"

namespace moe::ops::detail {
namespace {

template <class C>
__device__ __forceinline__ void sin_cos(C angle, C* s, C* c) {
  if constexpr (std::is_same_v<C, double>)
    sincos(angle, s, c);
  else
    sincosf(angle, s, c);  // full-range reduction (no --use_fast_math): matches cosf/sinf
}

// Shared memory: 2 * half values of C (cos then sin).
template <class T, class F, class P>
__global__ void rotary_kernel(const T* __restrict__ x, T* __restrict__ y,
                              const F* __restrict__ inv_freq, const P* __restrict__ positions,
                              RotaryLaunch l) {
  using C = Acc<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  C* cos_m = reinterpret_cast<C*>(smem_raw);
  const int64_t half = l.rotary_dim / 2;
  C* sin_m = cos_m + half;
  const int64_t pass = l.head_dim - l.rotary_dim;
  const int64_t per_head = half + pass;
  const int64_t items = l.heads * per_head;
  const C scale = static_cast<C>(l.attention_scale);
  for (int64_t token = blockIdx.x; token < l.tokens; token += gridDim.x) {
    const int64_t index = token / l.position_divisor;
    const int64_t p =
        l.position_offset + (positions != nullptr ? static_cast<int64_t>(positions[index]) : index);
    __syncthreads();  // the previous token's cos/sin may still be read
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      C s, c;
      sin_cos(static_cast<C>(p) * static_cast<C>(inv_freq[i]), &s, &c);
      cos_m[i] = c * scale;
      sin_m[i] = s * scale;
    }
    __syncthreads();
    const int64_t token_base = token * l.heads * l.head_dim;
    for (int64_t item = threadIdx.x; item < items; item += blockDim.x) {
      const int64_t h = item / per_head;
      const int64_t k = item - h * per_head;
      const T* xr = x + token_base + h * l.head_dim;
      T* yr = y + token_base + h * l.head_dim;
      if (k < half) {
        xr += l.feature_offset;  // pair indices are relative to the first rotated feature
        yr += l.feature_offset;
        const RotaryPair pr = rotary_pair(l.layout, k, half);
        const int64_t ra = l.inverse ? pr.out_a : pr.in_a, rb = l.inverse ? pr.out_b : pr.in_b;
        const int64_t wa = l.inverse ? pr.in_a : pr.out_a, wb = l.inverse ? pr.in_b : pr.out_b;
        C oa, ob;
        rotate_pair(to_acc(xr[ra]), to_acc(xr[rb]), cos_m[k], sin_m[k], l.inverse, oa, ob);
        from_acc(yr[wa], oa);
        from_acc(yr[wb], ob);
      } else {
        // Pass-through feature k - half, skipping the rotated block [offset, offset + Dr).
        int64_t j = k - half;
        if (j >= l.feature_offset) j += l.rotary_dim;
        yr[j] = xr[j];
      }
    }
  }
}

}  // namespace

void rotary_cuda(const Tensor& x, const Tensor& inv_freq, const Tensor& positions,
                 const RotaryLaunch& l, Tensor& y) {
  if (l.tokens == 0 || l.heads == 0) return;
  cudaStream_t stream = cuda::stream_of(x);
  const int64_t half = l.rotary_dim / 2;
  const int64_t items = l.heads * (half + l.head_dim - l.rotary_dim);
  int threads = 32;
  while (threads < items && threads < 256) threads *= 2;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(l.tokens, 1 << 20));
  dispatch_float(x.dtype(), "rotary", [&]<class T>() {
    using C = Acc<T>;
    const size_t smem = static_cast<size_t>(2 * half) * sizeof(C);
    MOE_CHECK(smem <= 48 * 1024, "rotary: rotary dimension ", l.rotary_dim,
              " needs more shared memory than a block has");
    dispatch<DType::f32, DType::f64>(inv_freq.dtype(), "rotary (inv_freq)", [&]<class F>() {
      auto launch = [&]<class P>(const P* pos) {
        rotary_kernel<T, F, P><<<blocks, threads, smem, stream>>>(x.data<T>(), y.data<T>(),
                                                                  inv_freq.data<F>(), pos, l);
        MOE_CUDA_CHECK_LAUNCH();
      };
      if (!positions.defined())
        launch(static_cast<const int64_t*>(nullptr));
      else if (positions.dtype() == DType::i64)
        launch(positions.data<int64_t>());
      else
        launch(positions.data<int32_t>());
    });
  });
}

}  // namespace moe::ops::detail
