// Elementwise helpers: public entry points (checks, device dispatch) and the CPU reference.
#include <type_traits>
#include <vector>

#include "moe/ops/elementwise.h"
#include "moe/ops/elementwise_cuda.h"

namespace moe::ops {
namespace {

void check_float(const Tensor& t, const char* op, const char* name) {
  check_defined(t, op, name);
  const DType d = t.dtype();
  MOE_CHECK(d == DType::f64 || d == DType::f32 || d == DType::bf16 || d == DType::f16, op, ": ",
            name, " must be one of f64, f32, bf16, f16, got ", d);
}

}  // namespace

void add_(Tensor& a, const Tensor& b, double alpha) {
  const char* op = "add_";
  check_float(a, op, "a");
  check_float(b, op, "b");
  check_shape(b, a.shape(), op, "b");
  check_same_device(a, b, op);
  if (a.is_cuda()) {
    MOE_CUDA_ONLY(detail::add_cuda(a, b, alpha); return;)
  }
  dispatch_float(a.dtype(), op, [&]<class TA>() {
    dispatch_float(b.dtype(), op, [&]<class TB>() {
      using A = std::conditional_t<std::is_same_v<TA, double> || std::is_same_v<TB, double>, double,
                                   float>;
      TA* pa = a.data<TA>();
      const TB* pb = b.data<TB>();
      const A k = static_cast<A>(alpha);
      for (int64_t i = 0, n = a.numel(); i < n; ++i)
        pa[i] = TA(static_cast<A>(pa[i]) + k * static_cast<A>(pb[i]));
    });
  });
}

void scale_(Tensor& a, double s) {
  const char* op = "scale_";
  check_float(a, op, "a");
  if (a.is_cuda()) {
    MOE_CUDA_ONLY(detail::scale_cuda(a, s); return;)
  }
  dispatch_float(a.dtype(), op, [&]<class T>() {
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    T* p = a.data<T>();
    const A k = static_cast<A>(s);
    for (int64_t i = 0, n = a.numel(); i < n; ++i) p[i] = T(static_cast<A>(p[i]) * k);
  });
}

Tensor sum_rows(const Tensor& x) {
  const char* op = "sum_rows";
  check_dim(x, 2, op, "x");
  check_float(x, op, "x");
  const DType out_dtype = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const int64_t rows = x.size(0), cols = x.size(1);
  Tensor out = Tensor::empty({cols}, out_dtype, x.device());
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::sum_rows_cuda(x, out); return out;)
  }
  // Reference: accumulate in double, round once.
  std::vector<double> acc(static_cast<size_t>(cols), 0.0);
  dispatch_float(x.dtype(), op, [&]<class T>() {
    const T* p = x.data<T>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) acc[c] += static_cast<double>(p[r * cols + c]);
  });
  dispatch<DType::f64, DType::f32>(out_dtype, op, [&]<class O>() {
    O* o = out.data<O>();
    for (int64_t c = 0; c < cols; ++c) o[c] = static_cast<O>(acc[c]);
  });
  return out;
}

}  // namespace moe::ops
