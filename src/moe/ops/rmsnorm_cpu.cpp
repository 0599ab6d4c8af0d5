// RMSNorm: public entry points (argument checks, device dispatch) and the CPU reference, in the
// compute type (float for bf16/f16, double for f64). Formulas in rmsnorm.h.
#include <cmath>
#include <type_traits>
#include <vector>

#include "moe/ops/rmsnorm.h"
#include "moe/ops/rmsnorm_cuda.h"

namespace moe::ops {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

DType rstd_dtype_for(DType x) {
  return x == DType::f64 ? DType::f64 : DType::f32;
}
DType grad_weight_dtype_for(DType x) {
  return (x == DType::bf16 || x == DType::f16) ? DType::f32 : x;
}

// x [..., H] with H >= 1 and w [H] of x's dtype on x's device; returns H.
int64_t check_x_weight(const Tensor& x, const Tensor& weight, const char* op) {
  check_defined(x, op, "x");
  check_defined(weight, op, "weight");
  MOE_CHECK(x.dim() >= 1, op, ": x must have at least one dimension, got ", x.str());
  const int64_t hidden = x.size(-1);
  MOE_CHECK(hidden >= 1, op, ": x needs a non-empty last dimension, got ", shape_str(x.shape()));
  const DType d = x.dtype();
  MOE_CHECK(d == DType::f64 || d == DType::f32 || d == DType::bf16 || d == DType::f16, op,
            ": x must be f64, f32, bf16 or f16, got ", d);
  check_shape(weight, {hidden}, op, "weight");
  check_dtype(weight, d, op, "weight");
  check_same_device(weight, x, op);
  return hidden;
}

void forward_cpu(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) {
  const int64_t rows = x.size(0), hidden = x.size(1);
  dispatch_float(x.dtype(), "rmsnorm_forward", [&]<class T>() {
    using A = Acc<T>;
    const T* in = x.data<T>();
    const T* w = weight.data<T>();
    T* out = y.data<T>();
    A* r = rstd.data<A>();
    for (int64_t n = 0; n < rows; ++n) {
      const T* xr = in + n * hidden;
      A sum_sq = 0;
      for (int64_t h = 0; h < hidden; ++h) {
        const A v = static_cast<A>(xr[h]);
        sum_sq += v * v;
      }
      const A rs = A(1) / std::sqrt(sum_sq / static_cast<A>(hidden) + static_cast<A>(eps));
      r[n] = rs;
      for (int64_t h = 0; h < hidden; ++h)
        out[n * hidden + h] = T(static_cast<A>(xr[h]) * rs * static_cast<A>(w[h]));
    }
  });
}

void backward_cpu(const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                  Tensor& dx, Tensor& grad_weight, bool accumulate) {
  const int64_t rows = x.size(0), hidden = x.size(1);
  dispatch_float(x.dtype(), "rmsnorm_backward", [&]<class T>() {
    using A = Acc<T>;
    using G = std::conditional_t<std::is_same_v<T, double>, double, float>;  // dw's type
    const T* in = x.data<T>();
    const T* dy = grad_y.data<T>();
    const T* w = weight.data<T>();
    const A* r = rstd.data<A>();
    T* d_in = dx.data<T>();
    std::vector<A> dw(static_cast<size_t>(hidden), A(0));
    for (int64_t n = 0; n < rows; ++n) {
      const T* xr = in + n * hidden;
      const T* dyr = dy + n * hidden;
      const A rs = r[n];
      A dot = 0;  // sum_h g * xhat
      for (int64_t h = 0; h < hidden; ++h) {
        const A xhat = static_cast<A>(xr[h]) * rs;
        const A d = static_cast<A>(dyr[h]);
        dot += d * static_cast<A>(w[h]) * xhat;
        dw[static_cast<size_t>(h)] += d * xhat;
      }
      const A mean_dot = dot / static_cast<A>(hidden);
      for (int64_t h = 0; h < hidden; ++h) {
        const A xhat = static_cast<A>(xr[h]) * rs;
        const A g = static_cast<A>(dyr[h]) * static_cast<A>(w[h]);
        d_in[n * hidden + h] = T(rs * (g - xhat * mean_dot));
      }
    }
    G* gw = grad_weight.data<G>();
    for (int64_t h = 0; h < hidden; ++h) {
      const G v = static_cast<G>(dw[static_cast<size_t>(h)]);
      gw[h] = accumulate ? gw[h] + v : v;
    }
  });
}

}  // namespace

RmsNormOutput rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps) {
  const char* op = "rmsnorm_forward";
  const int64_t hidden = check_x_weight(x, weight, op);
  MOE_CHECK(eps >= 0.0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
  const Tensor x2 = x.reshape({-1, hidden});
  RmsNormOutput out;
  out.y = Tensor::empty(x.shape(), x.dtype(), x.device());
  out.rstd = Tensor::empty({x2.size(0)}, rstd_dtype_for(x.dtype()), x.device());
  Tensor y2 = out.y.reshape({-1, hidden});
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::rmsnorm_forward_cuda(x2, weight, eps, y2, out.rstd); return out;)
  }
  forward_cpu(x2, weight, eps, y2, out.rstd);
  return out;
}

Tensor rmsnorm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd, Tensor& grad_weight, bool accumulate) {
  const char* op = "rmsnorm_backward";
  const int64_t hidden = check_x_weight(x, weight, op);
  check_defined(grad_y, op, "grad_y");
  check_shape(grad_y, x.shape(), op, "grad_y");
  check_dtype(grad_y, x.dtype(), op, "grad_y");
  check_same_device(grad_y, x, op);
  const int64_t rows = x.numel() / hidden;
  check_defined(rstd, op, "rstd");
  check_shape(rstd, {rows}, op, "rstd");
  check_dtype(rstd, rstd_dtype_for(x.dtype()), op, "rstd");
  check_same_device(rstd, x, op);
  check_defined(grad_weight, op, "grad_weight");
  check_shape(grad_weight, {hidden}, op, "grad_weight");
  check_dtype(grad_weight, grad_weight_dtype_for(x.dtype()), op, "grad_weight");
  check_same_device(grad_weight, x, op);

  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  const Tensor x2 = x.reshape({rows, hidden});
  const Tensor dy2 = grad_y.reshape({rows, hidden});
  Tensor dx2 = dx.reshape({rows, hidden});
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(
        detail::rmsnorm_backward_cuda(dy2, x2, weight, rstd, dx2, grad_weight, accumulate);
        return dx;)
  }
  backward_cpu(dy2, x2, weight, rstd, dx2, grad_weight, accumulate);
  return dx;
}

}  // namespace moe::ops
