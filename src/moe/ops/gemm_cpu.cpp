// gemm: the public entry point (checks, device dispatch) and the CPU reference through OpenBLAS.
#include <cblas.h>

#include "moe/ops/gemm.h"
#include "moe/ops/gemm_cuda.h"

namespace moe::ops {
namespace {

constexpr const char* kOp = "gemm";

bool is_half(DType dt) {
  return dt == DType::bf16 || dt == DType::f16;
}

// C = beta * C: the product with K = 0. beta = 0 writes zeros (BLAS semantics: C is not read).
void scale_cpu(Tensor& c, float beta) {
  if (beta == 1.0f) return;
  if (beta == 0.0f) {
    c.zero_();
    return;
  }
  dispatch_float(c.dtype(), kOp, [&]<class T>() {
    T* p = c.data<T>();
    for (int64_t i = 0, n = c.numel(); i < n; ++i) {
      if constexpr (std::is_same_v<T, double>)
        p[i] *= static_cast<double>(beta);
      else
        p[i] = T(static_cast<float>(p[i]) * beta);
    }
  });
}

// Row-major OpenBLAS call; lda/ldb are the stored row lengths (contiguous tensors).
void sgemm(const float* a, bool trans_a, int64_t lda, const float* b, bool trans_b, int64_t ldb,
           float* c, int64_t m, int64_t n, int64_t k, float alpha, float beta) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(n));
}

void gemm_cpu(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
              float beta) {
  const int64_t m = c.size(0), n = c.size(1);
  const int64_t k = trans_a ? a.size(0) : a.size(1);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    scale_cpu(c, beta);
    return;
  }
  const int64_t lda = a.size(1), ldb = b.size(1);
  switch (a.dtype()) {
    case DType::f64:
      cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                  trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
                  static_cast<blasint>(n), static_cast<blasint>(k), static_cast<double>(alpha),
                  a.data<double>(), static_cast<blasint>(lda), b.data<double>(),
                  static_cast<blasint>(ldb), static_cast<double>(beta), c.data<double>(),
                  static_cast<blasint>(n));
      return;
    case DType::f32:
      sgemm(a.data<float>(), trans_a, lda, b.data<float>(), trans_b, ldb, c.data<float>(), m, n, k,
            alpha, beta);
      return;
    default: {
      // bf16 / f16: upcast to f32, multiply with fp32 accumulation, round once at the end.
      const Tensor a32 = a.to(DType::f32), b32 = b.to(DType::f32);
      if (c.dtype() == DType::f32) {
        sgemm(a32.data<float>(), trans_a, lda, b32.data<float>(), trans_b, ldb, c.data<float>(), m,
              n, k, alpha, beta);
        return;
      }
      Tensor c32 = beta == 0.0f ? Tensor::empty(c.shape(), DType::f32) : c.to(DType::f32);
      sgemm(a32.data<float>(), trans_a, lda, b32.data<float>(), trans_b, ldb, c32.data<float>(), m,
            n, k, alpha, beta);
      c.copy_(c32.to(c.dtype()));
      return;
    }
  }
}

}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta) {
  check_dim(a, 2, kOp, "a");
  check_dim(b, 2, kOp, "b");
  check_dim(c, 2, kOp, "c");
  check_same_device(a, b, kOp);
  check_same_device(a, c, kOp);
  MOE_CHECK(a.dtype() == DType::f64 || a.dtype() == DType::f32 || is_half(a.dtype()), kOp,
            ": dtype ", a.dtype(), " is not supported; allowed: f64 f32 bf16 f16");
  MOE_CHECK(b.dtype() == a.dtype(), kOp, ": a is ", a.dtype(), " but b is ", b.dtype());
  MOE_CHECK(c.dtype() == a.dtype() || (is_half(a.dtype()) && c.dtype() == DType::f32), kOp,
            ": c must be ", a.dtype(), (is_half(a.dtype()) ? " or f32" : ""), " for ", a.dtype(),
            " inputs, got ", c.dtype());
  const int64_t m = trans_a ? a.size(1) : a.size(0);
  const int64_t k = trans_a ? a.size(0) : a.size(1);
  const int64_t kb = trans_b ? b.size(1) : b.size(0);
  const int64_t n = trans_b ? b.size(0) : b.size(1);
  MOE_CHECK(k == kb, kOp, ": inner dimensions differ: op(a) is [", m, ", ", k, "] (a ",
            shape_str(a.shape()), ", trans_a=", trans_a, "), op(b) is [", kb, ", ", n, "] (b ",
            shape_str(b.shape()), ", trans_b=", trans_b, ")");
  MOE_CHECK(c.size(0) == m && c.size(1) == n, kOp, ": c must have shape [", m, ", ", n, "], got ",
            shape_str(c.shape()));
  if (a.is_cuda()) {
    MOE_CUDA_ONLY(return gemm_cuda(a, trans_a, b, trans_b, c, alpha, beta);)
  }
  gemm_cpu(a, trans_a, b, trans_b, c, alpha, beta);
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  check_defined(a, "matmul", "a");
  return matmul(a, b, trans_a, trans_b, a.dtype());
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, DType out_dtype) {
  check_dim(a, 2, "matmul", "a");
  check_dim(b, 2, "matmul", "b");
  const int64_t m = trans_a ? a.size(1) : a.size(0);
  const int64_t n = trans_b ? b.size(0) : b.size(1);
  Tensor c = Tensor::empty({m, n}, out_dtype, a.device());
  gemm(a, trans_a, b, trans_b, c, 1.0f, 0.0f);
  return c;
}

}  // namespace moe::ops
