// MLA key/value expansion: public entry points (argument checks, device dispatch) and the CPU
// reference. Formulas in rope_mla.h.
#include <type_traits>

#include "moe/ops/rope_mla.h"
#include "moe/ops/rope_mla_cuda.h"

namespace moe::ops {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

void check_activation(const Tensor& t, const char* op, const char* name) {
  check_defined(t, op, name);
  const DType d = t.dtype();
  MOE_CHECK(d == DType::f64 || d == DType::f32 || d == DType::bf16 || d == DType::f16, op, ": ",
            name, " must be f64, f32, bf16 or f16, got ", d);
}

Shape token_shape(const Tensor& per_head) {
  return Shape(per_head.shape().begin(), per_head.shape().end() - 2);
}

Shape with_last(Shape shape, int64_t last) {
  shape.push_back(last);
  return shape;
}

int64_t product(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Checks a per-head tensor [tokens..., heads, width] and returns the launch's token/head counts.
detail::MlaKvLaunch describe_heads(const Tensor& t, int64_t nope_dim, const char* op,
                                   const char* name) {
  check_activation(t, op, name);
  MOE_CHECK(t.dim() >= 3, op, ": ", name,
            " must be [tokens..., heads, features] (at least 3 dims), got ", shape_str(t.shape()));
  MOE_CHECK(nope_dim >= 0, op, ": nope_dim must not be negative, got ", nope_dim);
  detail::MlaKvLaunch l;
  l.tokens = product(token_shape(t));
  l.heads = t.size(-2);
  l.nope_dim = nope_dim;
  return l;
}

}  // namespace

MlaKeyValue mla_expand_kv_forward(const Tensor& kv, const Tensor& k_pe, int64_t nope_dim) {
  const char* op = "mla_expand_kv_forward";
  detail::MlaKvLaunch l = describe_heads(kv, nope_dim, op, "kv");
  MOE_CHECK(kv.size(-1) > nope_dim, op, ": kv ", shape_str(kv.shape()), " must hold nope_dim ",
            nope_dim, " key features and at least one value feature");
  l.v_dim = kv.size(-1) - nope_dim;
  check_activation(k_pe, op, "k_pe");
  MOE_CHECK(k_pe.dim() >= 1 && k_pe.size(-1) >= 1, op, ": k_pe must be [tokens..., dr], got ",
            shape_str(k_pe.shape()));
  l.rope_dim = k_pe.size(-1);
  check_shape(k_pe, with_last(token_shape(kv), l.rope_dim), op, "k_pe");
  MOE_CHECK(k_pe.dtype() == kv.dtype(), op, ": k_pe is ", k_pe.dtype(), " but kv is ", kv.dtype());
  check_same_device(kv, k_pe, op);

  Shape k_shape = token_shape(kv), v_shape = token_shape(kv);
  k_shape.insert(k_shape.end(), {l.heads, l.nope_dim + l.rope_dim});
  v_shape.insert(v_shape.end(), {l.heads, l.v_dim});
  MlaKeyValue out{Tensor::empty(k_shape, kv.dtype(), kv.device()),
                  Tensor::empty(v_shape, kv.dtype(), kv.device())};
  if (l.tokens == 0 || l.heads == 0) return out;
  if (kv.is_cuda()) {
    MOE_CUDA_ONLY(detail::mla_expand_kv_forward_cuda(kv, k_pe, l, out.k, out.v); return out;)
  }
  dispatch_float(kv.dtype(), op, [&]<class T>() {
    const T* in = kv.data<T>();
    const T* pe = k_pe.data<T>();
    T* k = out.k.data<T>();
    T* v = out.v.data<T>();
    const int64_t dn = l.nope_dim, dr = l.rope_dim, dv = l.v_dim;
    for (int64_t t = 0; t < l.tokens; ++t)
      for (int64_t h = 0; h < l.heads; ++h) {
        const T* src = in + (t * l.heads + h) * (dn + dv);
        T* kr = k + (t * l.heads + h) * (dn + dr);
        T* vr = v + (t * l.heads + h) * dv;
        for (int64_t j = 0; j < dn; ++j) kr[j] = src[j];
        for (int64_t j = 0; j < dr; ++j) kr[dn + j] = pe[t * dr + j];
        for (int64_t j = 0; j < dv; ++j) vr[j] = src[dn + j];
      }
  });
  return out;
}

MlaKeyValueGrads mla_expand_kv_backward(const Tensor& grad_k, const Tensor& grad_v,
                                        int64_t nope_dim) {
  const char* op = "mla_expand_kv_backward";
  detail::MlaKvLaunch l = describe_heads(grad_k, nope_dim, op, "grad_k");
  MOE_CHECK(grad_k.size(-1) > nope_dim, op, ": grad_k ", shape_str(grad_k.shape()),
            " must hold nope_dim ", nope_dim, " features and at least one rotary feature");
  l.rope_dim = grad_k.size(-1) - nope_dim;
  check_activation(grad_v, op, "grad_v");
  MOE_CHECK(grad_v.dim() == grad_k.dim() && grad_v.size(-1) >= 1, op, ": grad_v ",
            shape_str(grad_v.shape()), " must be [tokens..., heads, dv] like grad_k ",
            shape_str(grad_k.shape()));
  l.v_dim = grad_v.size(-1);
  Shape v_shape = token_shape(grad_k);
  v_shape.insert(v_shape.end(), {l.heads, l.v_dim});
  check_shape(grad_v, v_shape, op, "grad_v");
  MOE_CHECK(grad_v.dtype() == grad_k.dtype(), op, ": grad_v is ", grad_v.dtype(), " but grad_k is ",
            grad_k.dtype());
  check_same_device(grad_k, grad_v, op);

  Shape kv_shape = token_shape(grad_k);
  kv_shape.insert(kv_shape.end(), {l.heads, l.nope_dim + l.v_dim});
  MlaKeyValueGrads g{
      Tensor::empty(kv_shape, grad_k.dtype(), grad_k.device()),
      Tensor::empty(with_last(token_shape(grad_k), l.rope_dim), grad_k.dtype(), grad_k.device())};
  if (l.tokens == 0) return g;
  if (l.heads == 0) {  // no head reads k_pe: its gradient is zero
    g.k_pe.zero_();
    return g;
  }
  if (grad_k.is_cuda()) {
    MOE_CUDA_ONLY(detail::mla_expand_kv_backward_cuda(grad_k, grad_v, l, g.kv, g.k_pe); return g;)
  }
  dispatch_float(grad_k.dtype(), op, [&]<class T>() {
    using A = Acc<T>;
    const T* dk = grad_k.data<T>();
    const T* dv_in = grad_v.data<T>();
    T* dkv = g.kv.data<T>();
    T* dpe = g.k_pe.data<T>();
    const int64_t dn = l.nope_dim, dr = l.rope_dim, dv = l.v_dim;
    for (int64_t t = 0; t < l.tokens; ++t) {
      for (int64_t h = 0; h < l.heads; ++h) {
        const T* kr = dk + (t * l.heads + h) * (dn + dr);
        const T* vr = dv_in + (t * l.heads + h) * dv;
        T* dst = dkv + (t * l.heads + h) * (dn + dv);
        for (int64_t j = 0; j < dn; ++j) dst[j] = kr[j];
        for (int64_t j = 0; j < dv; ++j) dst[dn + j] = vr[j];
      }
      for (int64_t j = 0; j < dr; ++j) {
        A sum = 0;
        for (int64_t h = 0; h < l.heads; ++h)
          sum += static_cast<A>(dk[(t * l.heads + h) * (dn + dr) + dn + j]);
        dpe[t * dr + j] = T(sum);
      }
    }
  });
  return g;
}

}  // namespace moe::ops
