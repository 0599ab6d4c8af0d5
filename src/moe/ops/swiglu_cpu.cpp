// SwiGLU with probs and the sigmoid gate: public entry points (argument checks, device
// dispatch) and the CPU reference, computed in the compute type (float for bf16/f16, double for
// f64) in the same operation order as the CUDA kernels (swiglu_cuda.cu).
#include <cmath>
#include <type_traits>

#include "moe/ops/swiglu.h"
#include "moe/ops/swiglu_cuda.h"

namespace moe::ops {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class A>
A sigmoid(A x) {
  return A(1) / (A(1) + std::exp(-x));
}

constexpr auto kActivationDtypes = "f64, f32, bf16, f16";

void check_activation_dtype(const Tensor& t, const char* op, const char* name) {
  const DType d = t.dtype();
  MOE_CHECK(d == DType::f64 || d == DType::f32 || d == DType::bf16 || d == DType::f16, op, ": ",
            name, " must be one of ", kActivationDtypes, ", got ", d);
}

// probs: undefined, or [rows] f32/f64 on fc1_out's device.
void check_row_probs(const Tensor& probs, const Tensor& fc1_out, const char* op) {
  if (!probs.defined()) return;
  check_shape(probs, {fc1_out.size(0)}, op, "probs");
  MOE_CHECK(probs.dtype() == DType::f32 || probs.dtype() == DType::f64, op,
            ": probs must be f32 or f64, got ", probs.dtype());
  check_same_device(probs, fc1_out, op);
}

void check_fc1_out(const Tensor& fc1_out, const char* op) {
  check_dim(fc1_out, 2, op, "fc1_out");
  check_activation_dtype(fc1_out, op, "fc1_out");
  MOE_CHECK(fc1_out.size(1) % 2 == 0, op, ": fc1_out [R, 2F] needs an even last dimension, got ",
            shape_str(fc1_out.shape()));
}

// Calls fn.template operator()<P>() with P the probs' C++ type (float when undefined).
template <class Fn>
void with_probs_type(const Tensor& probs, Fn&& fn) {
  if (!probs.defined()) return fn.template operator()<float>();
  dispatch<DType::f32, DType::f64>(probs.dtype(), "swiglu (probs)", std::forward<Fn>(fn));
}

void swiglu_forward_cpu(const Tensor& fc1_out, const Tensor& probs, Tensor& h) {
  const int64_t rows = fc1_out.size(0), ffn = fc1_out.size(1) / 2;
  dispatch_float(fc1_out.dtype(), "swiglu_forward", [&]<class T>() {
    with_probs_type(probs, [&]<class P>() {
      using A = Acc<T>;
      const T* in = fc1_out.data<T>();
      const P* p = probs.defined() ? probs.data<P>() : nullptr;
      T* out = h.data<T>();
      for (int64_t r = 0; r < rows; ++r) {
        const T* gate = in + r * 2 * ffn;
        const T* up = gate + ffn;
        const A scale = p ? static_cast<A>(p[r]) : A(1);
        for (int64_t f = 0; f < ffn; ++f) {
          const A g = static_cast<A>(gate[f]);
          const A silu = g * sigmoid(g);
          out[r * ffn + f] = T(silu * static_cast<A>(up[f]) * scale);
        }
      }
    });
  });
}

void swiglu_backward_cpu(const Tensor& grad_h, const Tensor& fc1_out, const Tensor& probs,
                         Tensor& d_fc1, Tensor& d_probs) {
  const int64_t rows = fc1_out.size(0), ffn = fc1_out.size(1) / 2;
  dispatch_float(fc1_out.dtype(), "swiglu_backward", [&]<class T>() {
    with_probs_type(probs, [&]<class P>() {
      using A = Acc<T>;
      const T* in = fc1_out.data<T>();
      const T* dh = grad_h.data<T>();
      const P* p = probs.defined() ? probs.data<P>() : nullptr;
      T* d_in = d_fc1.data<T>();
      P* dp_out = d_probs.defined() ? d_probs.data<P>() : nullptr;
      for (int64_t r = 0; r < rows; ++r) {
        const T* gate = in + r * 2 * ffn;
        const T* up = gate + ffn;
        T* d_gate = d_in + r * 2 * ffn;
        T* d_up = d_gate + ffn;
        const A scale = p ? static_cast<A>(p[r]) : A(1);
        A d_scale = 0;
        for (int64_t f = 0; f < ffn; ++f) {
          const A g = static_cast<A>(gate[f]), u = static_cast<A>(up[f]);
          const A d = static_cast<A>(dh[r * ffn + f]);
          const A s = sigmoid(g);
          const A silu = g * s;
          const A d_silu = s * (A(1) + g * (A(1) - s));  // silu'(g)
          const A dp = d * scale;
          d_gate[f] = T(dp * u * d_silu);
          d_up[f] = T(dp * silu);
          d_scale += silu * u * d;
        }
        if (dp_out) dp_out[r] = static_cast<P>(d_scale);
      }
    });
  });
}

void sigmoid_gate_forward_cpu(const Tensor& out, const Tensor& gate_logits, Tensor& y) {
  const int64_t rows = out.size(0), cols = out.size(1);
  dispatch_float(out.dtype(), "sigmoid_gate_forward", [&]<class T>() {
    using A = Acc<T>;
    const T* o = out.data<T>();
    const T* g = gate_logits.data<T>();
    T* dst = y.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      const A s = sigmoid(static_cast<A>(g[r]));
      for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = T(static_cast<A>(o[r * cols + c]) * s);
    }
  });
}

void sigmoid_gate_backward_cpu(const Tensor& grad_y, const Tensor& out, const Tensor& gate_logits,
                               Tensor& d_out, Tensor& d_gate) {
  const int64_t rows = out.size(0), cols = out.size(1);
  dispatch_float(out.dtype(), "sigmoid_gate_backward", [&]<class T>() {
    using A = Acc<T>;
    const T* o = out.data<T>();
    const T* g = gate_logits.data<T>();
    const T* dy = grad_y.data<T>();
    T* d_o = d_out.data<T>();
    T* d_g = d_gate.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      const A s = sigmoid(static_cast<A>(g[r]));
      A dot = 0;  // sum_h dy * out
      for (int64_t c = 0; c < cols; ++c) {
        const A d = static_cast<A>(dy[r * cols + c]);
        d_o[r * cols + c] = T(d * s);
        dot += d * static_cast<A>(o[r * cols + c]);
      }
      d_g[r] = T(dot * (s * (A(1) - s)));
    }
  });
}

}  // namespace

Tensor swiglu_forward(const Tensor& fc1_out, const Tensor& probs) {
  const char* op = "swiglu_forward";
  check_fc1_out(fc1_out, op);
  check_row_probs(probs, fc1_out, op);
  Tensor h =
      Tensor::empty({fc1_out.size(0), fc1_out.size(1) / 2}, fc1_out.dtype(), fc1_out.device());
  if (fc1_out.is_cuda()) {
    MOE_CUDA_ONLY(detail::swiglu_forward_cuda(fc1_out, probs, h); return h;)
  }
  swiglu_forward_cpu(fc1_out, probs, h);
  return h;
}

SwigluGrads swiglu_backward(const Tensor& grad_h, const Tensor& fc1_out, const Tensor& probs) {
  const char* op = "swiglu_backward";
  check_fc1_out(fc1_out, op);
  check_row_probs(probs, fc1_out, op);
  check_shape(grad_h, {fc1_out.size(0), fc1_out.size(1) / 2}, op, "grad_h");
  check_dtype(grad_h, fc1_out.dtype(), op, "grad_h");
  check_same_device(grad_h, fc1_out, op);
  SwigluGrads grads;
  grads.fc1_out = Tensor::empty(fc1_out.shape(), fc1_out.dtype(), fc1_out.device());
  if (probs.defined()) grads.probs = Tensor::empty(probs.shape(), probs.dtype(), probs.device());
  if (fc1_out.is_cuda()) {
    MOE_CUDA_ONLY(detail::swiglu_backward_cuda(grad_h, fc1_out, probs, grads.fc1_out, grads.probs);
                  return grads;)
  }
  swiglu_backward_cpu(grad_h, fc1_out, probs, grads.fc1_out, grads.probs);
  return grads;
}

namespace {
void check_gate_args(const Tensor& out, const Tensor& gate_logits, const char* op) {
  check_dim(out, 2, op, "out");
  check_activation_dtype(out, op, "out");
  check_shape(gate_logits, {out.size(0), 1}, op, "gate_logits");
  check_dtype(gate_logits, out.dtype(), op, "gate_logits");
  check_same_device(gate_logits, out, op);
}
}  // namespace

Tensor sigmoid_gate_forward(const Tensor& out, const Tensor& gate_logits) {
  const char* op = "sigmoid_gate_forward";
  check_gate_args(out, gate_logits, op);
  Tensor y = Tensor::empty(out.shape(), out.dtype(), out.device());
  if (out.is_cuda()) {
    MOE_CUDA_ONLY(detail::sigmoid_gate_forward_cuda(out, gate_logits, y); return y;)
  }
  sigmoid_gate_forward_cpu(out, gate_logits, y);
  return y;
}

SigmoidGateGrads sigmoid_gate_backward(const Tensor& grad_y, const Tensor& out,
                                       const Tensor& gate_logits) {
  const char* op = "sigmoid_gate_backward";
  check_gate_args(out, gate_logits, op);
  check_shape(grad_y, out.shape(), op, "grad_y");
  check_dtype(grad_y, out.dtype(), op, "grad_y");
  check_same_device(grad_y, out, op);
  SigmoidGateGrads grads;
  grads.out = Tensor::empty(out.shape(), out.dtype(), out.device());
  grads.gate_logits = Tensor::empty(gate_logits.shape(), gate_logits.dtype(), out.device());
  if (out.is_cuda()) {
    MOE_CUDA_ONLY(
        detail::sigmoid_gate_backward_cuda(grad_y, out, gate_logits, grads.out, grads.gate_logits);
        return grads;)
  }
  sigmoid_gate_backward_cpu(grad_y, out, gate_logits, grads.out, grads.gate_logits);
  return grads;
}

}  // namespace moe::ops
