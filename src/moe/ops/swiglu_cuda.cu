// CUDA SwiGLU with probs and the sigmoid gate. One pass over the rows, a group of threads per
// row (row_launch); 16-byte packed loads and stores when the row width allows, fp32 math for
// bf16/f16 (fp64 for f64), the same operation order as the CPU reference (swiglu_cpu.cpp).
// Row sums (d_probs, d_gate) reduce within the row's thread group in a fixed order: no atomics.
#include "moe/core/cuda_utils.h"
#include "moe/ops/row_kernels_cuda.cuh"
#include "moe/ops/swiglu_cuda.h"

namespace moe::ops::detail {
namespace {

template <class A>
__device__ __forceinline__ A sigmoid(A x) {
  if constexpr (std::is_same_v<A, double>)
    return 1.0 / (1.0 + exp(-x));
  else
    return 1.0f / (1.0f + expf(-x));
}

__device__ __forceinline__ int64_t row_of_thread(int threads_per_row) {
  return int64_t(blockIdx.x) * (blockDim.x / threads_per_row) + threadIdx.x / threads_per_row;
}

// h = silu(gate) * up * p, N elements per thread step.
template <class T, int N, class P>
__global__ void swiglu_forward_kernel(const T* __restrict__ fc1, T* __restrict__ h, int64_t rows,
                                      int64_t ffn, int threads_per_row,
                                      const P* __restrict__ probs) {
  using A = Acc<T>;
  const int64_t row = row_of_thread(threads_per_row);
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  if (row >= rows) return;
  const T* gate = fc1 + row * 2 * ffn;
  const T* up = gate + ffn;
  T* out = h + row * ffn;
  const A scale = probs != nullptr ? static_cast<A>(probs[row]) : A(1);
  for (int64_t c = int64_t(lane) * N; c < ffn; c += int64_t(threads_per_row) * N) {
    const Pack<T, N> g = load_pack<N>(gate + c);
    const Pack<T, N> u = load_pack<N>(up + c);
    Pack<T, N> o;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const A gi = to_acc(g.v[i]);
      const A silu = gi * sigmoid(gi);
      from_acc(o.v[i], silu * to_acc(u.v[i]) * scale);
    }
    store_pack<N>(out + c, o);
  }
}

// d_gate = dh p up silu'(gate), d_up = dh p silu(gate), d_p = sum_f silu(gate) up dh.
// No early return: the row sum needs every thread of the block.
template <class T, int N, class P>
__global__ void swiglu_backward_kernel(const T* __restrict__ grad_h, const T* __restrict__ fc1,
                                       T* __restrict__ d_fc1, int64_t rows, int64_t ffn,
                                       int threads_per_row, const P* __restrict__ probs,
                                       P* __restrict__ d_probs) {
  using A = Acc<T>;
  __shared__ A scratch[kRowBlock / 32];
  const int64_t row = row_of_thread(threads_per_row);
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  A d_scale = 0;
  if (row < rows) {
    const T* gate = fc1 + row * 2 * ffn;
    const T* up = gate + ffn;
    const T* dh = grad_h + row * ffn;
    T* d_gate = d_fc1 + row * 2 * ffn;
    T* d_up = d_gate + ffn;
    const A scale = probs != nullptr ? static_cast<A>(probs[row]) : A(1);
    for (int64_t c = int64_t(lane) * N; c < ffn; c += int64_t(threads_per_row) * N) {
      const Pack<T, N> g = load_pack<N>(gate + c);
      const Pack<T, N> u = load_pack<N>(up + c);
      const Pack<T, N> d = load_pack<N>(dh + c);
      Pack<T, N> dg, du;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const A gi = to_acc(g.v[i]), ui = to_acc(u.v[i]), di = to_acc(d.v[i]);
        const A s = sigmoid(gi);
        const A silu = gi * s;
        const A d_silu = s * (A(1) + gi * (A(1) - s));
        const A dp = di * scale;
        from_acc(dg.v[i], dp * ui * d_silu);
        from_acc(du.v[i], dp * silu);
        d_scale += silu * ui * di;
      }
      store_pack<N>(d_gate + c, dg);
      store_pack<N>(d_up + c, du);
    }
  }
  if (d_probs != nullptr) {  // uniform across the block
    const A total = row_group_sum(d_scale, threads_per_row, scratch);
    if (row < rows && lane == 0) d_probs[row] = static_cast<P>(total);
  }
}

// y = out * sigmoid(g_row).
template <class T, int N>
__global__ void sigmoid_gate_forward_kernel(const T* __restrict__ out, const T* __restrict__ gate,
                                            T* __restrict__ y, int64_t rows, int64_t cols,
                                            int threads_per_row) {
  using A = Acc<T>;
  const int64_t row = row_of_thread(threads_per_row);
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  if (row >= rows) return;
  const A s = sigmoid(to_acc(gate[row]));
  for (int64_t c = int64_t(lane) * N; c < cols; c += int64_t(threads_per_row) * N) {
    const Pack<T, N> o = load_pack<N>(out + row * cols + c);
    Pack<T, N> r;
#pragma unroll
    for (int i = 0; i < N; ++i) from_acc(r.v[i], to_acc(o.v[i]) * s);
    store_pack<N>(y + row * cols + c, r);
  }
}

// d_out = dy s, d_g = (sum_h dy out) s (1 - s).
template <class T, int N>
__global__ void sigmoid_gate_backward_kernel(const T* __restrict__ grad_y,
                                             const T* __restrict__ out, const T* __restrict__ gate,
                                             T* __restrict__ d_out, T* __restrict__ d_gate,
                                             int64_t rows, int64_t cols, int threads_per_row) {
  using A = Acc<T>;
  __shared__ A scratch[kRowBlock / 32];
  const int64_t row = row_of_thread(threads_per_row);
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  A dot = 0;
  A s = 0;
  if (row < rows) {
    s = sigmoid(to_acc(gate[row]));
    for (int64_t c = int64_t(lane) * N; c < cols; c += int64_t(threads_per_row) * N) {
      const Pack<T, N> dy = load_pack<N>(grad_y + row * cols + c);
      const Pack<T, N> o = load_pack<N>(out + row * cols + c);
      Pack<T, N> r;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        const A d = to_acc(dy.v[i]);
        from_acc(r.v[i], d * s);
        dot += d * to_acc(o.v[i]);
      }
      store_pack<N>(d_out + row * cols + c, r);
    }
  }
  const A total = row_group_sum(dot, threads_per_row, scratch);
  if (row < rows && lane == 0) from_acc(d_gate[row], total * (s * (A(1) - s)));
}

// Runs launch.template operator()<N>() with N = 16 bytes of T when every row start is 16-byte
// aligned (cols % N == 0 and aligned bases), else N = 1.
template <class T, class Fn>
void with_pack_width(int64_t cols, std::initializer_list<const void*> bases, Fn&& launch) {
  constexpr int kN = kPack16<T>;
  bool vector = cols % kN == 0;
  for (const void* p : bases) vector = vector && aligned_to(p, 16);
  if (vector)
    launch.template operator()<kN>();
  else
    launch.template operator()<1>();
}

template <class Fn>
void with_probs_type(const Tensor& probs, Fn&& fn) {
  if (!probs.defined()) return fn.template operator()<float>();
  dispatch<DType::f32, DType::f64>(probs.dtype(), "swiglu (probs)", std::forward<Fn>(fn));
}

}  // namespace

void swiglu_forward_cuda(const Tensor& fc1_out, const Tensor& probs, Tensor& h) {
  const int64_t rows = fc1_out.size(0), ffn = fc1_out.size(1) / 2;
  if (rows == 0 || ffn == 0) return;
  cudaStream_t stream = cuda::stream_of(fc1_out);
  dispatch_float(fc1_out.dtype(), "swiglu_forward", [&]<class T>() {
    with_probs_type(probs, [&]<class P>() {
      with_pack_width<T>(ffn, {fc1_out.raw(), h.raw()}, [&]<int N>() {
        const RowLaunch launch = row_launch(rows, (ffn + N - 1) / N);
        swiglu_forward_kernel<T, N, P><<<launch.blocks, kRowBlock, 0, stream>>>(
            fc1_out.data<T>(), h.data<T>(), rows, ffn, launch.threads_per_row,
            probs.defined() ? probs.data<P>() : nullptr);
        MOE_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void swiglu_backward_cuda(const Tensor& grad_h, const Tensor& fc1_out, const Tensor& probs,
                          Tensor& d_fc1, Tensor& d_probs) {
  const int64_t rows = fc1_out.size(0), ffn = fc1_out.size(1) / 2;
  if (rows == 0) return;
  cudaStream_t stream = cuda::stream_of(fc1_out);
  dispatch_float(fc1_out.dtype(), "swiglu_backward", [&]<class T>() {
    with_probs_type(probs, [&]<class P>() {
      with_pack_width<T>(ffn, {fc1_out.raw(), grad_h.raw(), d_fc1.raw()}, [&]<int N>() {
        const RowLaunch launch = row_launch(rows, (ffn + N - 1) / N);
        swiglu_backward_kernel<T, N, P><<<launch.blocks, kRowBlock, 0, stream>>>(
            grad_h.data<T>(), fc1_out.data<T>(), d_fc1.data<T>(), rows, ffn, launch.threads_per_row,
            probs.defined() ? probs.data<P>() : nullptr,
            d_probs.defined() ? d_probs.data<P>() : nullptr);
        MOE_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void sigmoid_gate_forward_cuda(const Tensor& out, const Tensor& gate_logits, Tensor& y) {
  const int64_t rows = out.size(0), cols = out.size(1);
  if (rows == 0 || cols == 0) return;
  cudaStream_t stream = cuda::stream_of(out);
  dispatch_float(out.dtype(), "sigmoid_gate_forward", [&]<class T>() {
    with_pack_width<T>(cols, {out.raw(), y.raw()}, [&]<int N>() {
      const RowLaunch launch = row_launch(rows, (cols + N - 1) / N);
      sigmoid_gate_forward_kernel<T, N><<<launch.blocks, kRowBlock, 0, stream>>>(
          out.data<T>(), gate_logits.data<T>(), y.data<T>(), rows, cols, launch.threads_per_row);
      MOE_CUDA_CHECK_LAUNCH();
    });
  });
}

void sigmoid_gate_backward_cuda(const Tensor& grad_y, const Tensor& out, const Tensor& gate_logits,
                                Tensor& d_out, Tensor& d_gate) {
  const int64_t rows = out.size(0), cols = out.size(1);
  if (rows == 0) return;
  cudaStream_t stream = cuda::stream_of(out);
  dispatch_float(out.dtype(), "sigmoid_gate_backward", [&]<class T>() {
    with_pack_width<T>(cols, {grad_y.raw(), out.raw(), d_out.raw()}, [&]<int N>() {
      const RowLaunch launch = row_launch(rows, (cols + N - 1) / N);
      sigmoid_gate_backward_kernel<T, N><<<launch.blocks, kRowBlock, 0, stream>>>(
          grad_y.data<T>(), out.data<T>(), gate_logits.data<T>(), d_out.data<T>(), d_gate.data<T>(),
          rows, cols, launch.threads_per_row);
      MOE_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace moe::ops::detail
