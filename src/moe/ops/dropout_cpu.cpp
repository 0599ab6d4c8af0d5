// Dropout: public entry points (checks, device dispatch) and the CPU reference, the formula of
// dropout.h element by element (the CUDA kernels compute the same bits: dropout_cuda.cu).
#include <cmath>
#include <type_traits>

#include "moe/ops/dropout.h"
#include "moe/ops/dropout_cuda.h"

namespace moe::ops {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

void check_args(const DropoutArgs& args, const char* op) {
  check_dropout_probability(args.p, op);
  MOE_CHECK(args.first_sample >= 0, op, ": first_sample must be >= 0, got ", args.first_sample);
}

void check_input(const Tensor& x, const char* op) {
  check_defined(x, op, "x");
  check_dim(x, 3, op, "x");
  const DType d = x.dtype();
  MOE_CHECK(d == DType::f64 || d == DType::f32 || d == DType::bf16 || d == DType::f16, op,
            ": x must be one of f64, f32, bf16, f16, got ", d);
}

// 1 / (1 - p) as the kernels use it (0 when everything is dropped).
double keep_scale(double p) {
  return p >= 1.0 ? 0.0 : 1.0 / (1.0 - p);
}

// The global index of element (s, b, f) of an [S, B, F] tensor (dropout.h).
uint64_t global_index(const DropoutArgs& args, int64_t S, int64_t F, int64_t s, int64_t b,
                      int64_t f) {
  return (static_cast<uint64_t>(args.first_sample + b) * static_cast<uint64_t>(S) +
          static_cast<uint64_t>(s)) *
             static_cast<uint64_t>(F) +
         static_cast<uint64_t>(f);
}

void dropout_cpu(const Tensor& x, Tensor& y, const DropoutArgs& args) {
  const int64_t S = x.size(0), B = x.size(1), F = x.size(2);
  const float p = static_cast<float>(args.p);
  dispatch<DType::f64, DType::f32, DType::bf16, DType::f16>(x.dtype(), "dropout", [&]<class T>() {
    using A = Acc<T>;
    const A scale = static_cast<A>(keep_scale(args.p));
    const T* in = x.data<T>();
    T* out = y.data<T>();
    for (int64_t s = 0; s < S; ++s)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t f = 0; f < F; ++f) {
          const int64_t e = (s * B + b) * F + f;
          const bool keep = dropout_keep(args.key, global_index(args, S, F, s, b, f), p);
          out[e] = keep ? T(static_cast<A>(in[e]) * scale) : T(A(0));
        }
  });
}

}  // namespace

void check_dropout_probability(double p, const char* what) {
  MOE_CHECK(std::isfinite(p) && p >= 0.0 && p <= 1.0, what,
            ": the dropout probability must be in [0, 1], got ", p);
}

Tensor dropout(const Tensor& x, const DropoutArgs& args) {
  const char* op = "dropout";
  check_args(args, op);
  if (!args.active()) return x;  // the identity: not even a check of x
  check_input(x, op);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return y;
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::dropout_cuda(x, y, args, keep_scale(args.p)); return y;)
  }
  dropout_cpu(x, y, args);
  return y;
}

void dropout_(Tensor& x, const DropoutArgs& args) {
  const char* op = "dropout_";
  check_args(args, op);
  if (!args.active()) return;
  check_input(x, op);
  if (x.numel() == 0) return;
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::dropout_cuda(x, x, args, keep_scale(args.p)); return;)
  }
  dropout_cpu(x, x, args);
}

Tensor dropout_mask(const Shape& shape, const DropoutArgs& args, Device device) {
  const char* op = "dropout_mask";
  check_args(args, op);
  MOE_CHECK(shape.size() == 3, op, ": the shape must be [S, B, F], got ", shape_str(shape));
  Tensor mask = Tensor::empty(shape, DType::u8, device);
  if (mask.numel() == 0) return mask;
  if (device.is_cuda()) {
    MOE_CUDA_ONLY(detail::dropout_mask_cuda(mask, args); return mask;)
  }
  const int64_t S = shape[0], B = shape[1], F = shape[2];
  const float p = static_cast<float>(args.p);
  uint8_t* m = mask.data<uint8_t>();
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t f = 0; f < F; ++f)
        m[(s * B + b) * F + f] = dropout_keep(args.key, global_index(args, S, F, s, b, f), p);
  return mask;
}

}  // namespace moe::ops
