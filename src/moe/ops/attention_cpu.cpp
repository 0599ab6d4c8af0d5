// Attention: public entry points (argument checks, device dispatch) and the CPU reference, a
// direct transcription of the formulas in attention.h, one query row at a time, computed in f64
// for f64 inputs and in f32 otherwise. It materialises one row of scores at a time, never
// Sq x Sk.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "moe/ops/attention.h"
#include "moe/ops/attention_cuda.h"
#include "moe/ops/attention_cudnn.h"

namespace moe::ops {
namespace {

using detail::AttentionShape;
using detail::AttentionStrides;

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr int64_t kCudaMaxHeadDim = 256;

DType lse_dtype_for(DType dt) {
  return dt == DType::f64 ? DType::f64 : DType::f32;
}

// Dims of a [.., .., H, Dh] tensor in `layout`: {B, S, H, Dh}.
Shape layout_shape(AttentionLayout layout, int64_t batch, int64_t seq, int64_t heads, int64_t dim) {
  if (layout == AttentionLayout::bshd) return {batch, seq, heads, dim};
  return {seq, batch, heads, dim};
}

// Checks q, k, v and derives the problem shape.
AttentionShape check_qkv(const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionOptions& options, const char* op) {
  check_defined(q, op, "q");
  check_defined(k, op, "k");
  check_defined(v, op, "v");
  check_dim(q, 4, op, "q");
  check_dim(k, 4, op, "k");
  check_dim(v, 4, op, "v");
  const DType dt = q.dtype();
  MOE_CHECK(dt == DType::f64 || dt == DType::f32 || dt == DType::bf16 || dt == DType::f16, op,
            ": q must be one of f64, f32, bf16, f16, got ", dt);
  check_dtype(k, dt, op, "k");
  check_dtype(v, dt, op, "v");
  check_same_device(q, k, op);
  check_same_device(q, v, op);

  AttentionShape shape;
  shape.layout = options.layout;
  shape.dropout = options.dropout;
  shape.causal = options.causal;
  const bool bshd = options.layout == AttentionLayout::bshd;
  shape.batch = q.size(bshd ? 0 : 1);
  shape.q_seq = q.size(bshd ? 1 : 0);
  shape.kv_seq = k.size(bshd ? 1 : 0);
  shape.q_heads = q.size(2);
  shape.head_dim = q.size(3);
  shape.kv_heads = k.size(2);
  shape.v_head_dim = v.size(3);
  MOE_CHECK(shape.q_heads >= 1 && shape.kv_heads >= 1 && shape.q_heads % shape.kv_heads == 0, op,
            ": the query heads (", shape.q_heads, ") must be a positive multiple of the kv heads (",
            shape.kv_heads, "); q ", shape_str(q.shape()), ", k ", shape_str(k.shape()));
  MOE_CHECK(shape.head_dim >= 1 && shape.v_head_dim >= 1, op, ": head dims must be positive; q ",
            shape_str(q.shape()), ", v ", shape_str(v.shape()));
  check_shape(k,
              layout_shape(shape.layout, shape.batch, shape.kv_seq, shape.kv_heads, shape.head_dim),
              op, "k");
  check_shape(
      v, layout_shape(shape.layout, shape.batch, shape.kv_seq, shape.kv_heads, shape.v_head_dim),
      op, "v");
  MOE_CHECK(shape.kv_seq >= 1 || shape.q_seq == 0, op, ": ", shape.q_seq,
            " query rows need at least one key, got an empty key sequence; q ",
            shape_str(q.shape()), ", k ", shape_str(k.shape()));
  MOE_CHECK(options.causal_offset >= 0, op, ": causal_offset must be >= 0 (query row i sees keys ",
            "j <= i + causal_offset), got ", options.causal_offset);
  // Not causal: no offset (so equal problems share one cuDNN graph). Clamped to Sk: beyond
  // Sk - 1 every row sees all keys anyway (attention_cuda.h).
  shape.causal_offset = shape.causal ? std::min(options.causal_offset, shape.kv_seq) : 0;
  check_probs_dropout(options.dropout, shape.q_heads, shape.q_seq, shape.kv_seq, op);
  shape.scale = attention_scale(options, shape.head_dim);
  MOE_CHECK(std::isfinite(shape.scale), op, ": softmax_scale must be finite, got ", shape.scale);
  if (q.is_cuda()) {
    MOE_CHECK(dt == DType::f32 || dt == DType::bf16, op, ": CUDA supports f32 and bf16, got ", dt);
    MOE_CHECK(shape.head_dim <= kCudaMaxHeadDim && shape.v_head_dim <= kCudaMaxHeadDim, op,
              ": CUDA supports head dims up to ", kCudaMaxHeadDim, ", got D = ", shape.head_dim,
              ", Dv = ", shape.v_head_dim);
  }
  return shape;
}

Shape out_shape(const AttentionShape& s) {
  return layout_shape(s.layout, s.batch, s.q_seq, s.q_heads, s.v_head_dim);
}

// Offset of element (b, t, h, 0).
int64_t at(const AttentionStrides& st, int64_t b, int64_t t, int64_t h) {
  return b * st.batch + t * st.token + h * st.head;
}

template <class T, class A>
A dot(const T* x, const T* y, int64_t n) {
  A sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<A>(x[i]) * static_cast<A>(y[i]);
  return sum;
}

// c M_ij of attention dropout (attention.h) for query row i of (b, h) and key j: 0 or 1 / (1 - p).
template <class A>
struct DropoutRow {
  const AttentionShape& s;
  float p;
  A scale;
  uint64_t base;  // the global index of (b, h, i, 0)
  DropoutRow(const AttentionShape& shape, int64_t b, int64_t h, int64_t i)
      : s(shape),
        p(static_cast<float>(shape.dropout.p)),
        scale(shape.dropout.p >= 1.0 ? A(0) : static_cast<A>(1.0 / (1.0 - shape.dropout.p))),
        base(dropout_probs_index(shape.dropout.first_sample, shape.dropout.head_offset,
                                 static_cast<uint64_t>(shape.dropout.global_heads(shape.q_heads)),
                                 shape.dropout.query_offset, shape.dropout.key_offset,
                                 static_cast<uint64_t>(shape.dropout_seq_total()), b, h, i, 0)) {}
  A operator()(int64_t j) const {
    return dropout_keep(s.dropout.key, base + static_cast<uint64_t>(j), p) ? scale : A(0);
  }
};

void forward_cpu(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                 Tensor& out, Tensor& lse) {
  const AttentionStrides qs = s.q_strides();
  const AttentionStrides ks = s.k_strides();
  const AttentionStrides vs = s.v_strides();
  const AttentionStrides os = s.out_strides();
  dispatch_float(q.dtype(), "attention_forward", [&]<class T>() {
    using A = Acc<T>;
    const T* qp = q.data<T>();
    const T* kp = k.data<T>();
    const T* vp = v.data<T>();
    T* op = out.data<T>();
    A* lp = lse.data<A>();
    const A scale = static_cast<A>(s.scale);
    std::vector<A> scores(static_cast<size_t>(s.kv_seq));
    std::vector<A> row(static_cast<size_t>(s.v_head_dim));
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t h = 0; h < s.q_heads; ++h) {
        const int64_t g = h / s.group();
        for (int64_t i = 0; i < s.q_seq; ++i) {
          const T* qi = qp + at(qs, b, i, h);
          const int64_t n = s.visible_keys(i);
          A m = -std::numeric_limits<A>::infinity();
          for (int64_t j = 0; j < n; ++j) {
            scores[j] = scale * dot<T, A>(qi, kp + at(ks, b, j, g), s.head_dim);
            m = std::max(m, scores[j]);
          }
          A l = 0;
          std::fill(row.begin(), row.end(), A(0));
          const bool drop = s.dropout.active();
          const DropoutRow<A> mask(s, b, h, i);
          for (int64_t j = 0; j < n; ++j) {
            const A p = std::exp(scores[j] - m);
            l += p;
            const A pv = drop ? p * mask(j) : p;  // the dropped probability multiplies v
            const T* vj = vp + at(vs, b, j, g);
            for (int64_t d = 0; d < s.v_head_dim; ++d) row[d] += pv * static_cast<A>(vj[d]);
          }
          T* oi = op + at(os, b, i, h);
          for (int64_t d = 0; d < s.v_head_dim; ++d) oi[d] = T(row[d] / l);
          lp[(b * s.q_heads + h) * s.q_seq + i] = m + std::log(l);
        }
      }
    }
  });
}

void backward_cpu(const AttentionShape& s, const Tensor& grad_out, const Tensor& q, const Tensor& k,
                  const Tensor& v, const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk,
                  Tensor& dv) {
  const AttentionStrides qs = s.q_strides();
  const AttentionStrides ks = s.k_strides();
  const AttentionStrides vs = s.v_strides();
  const AttentionStrides os = s.out_strides();
  dispatch_float(q.dtype(), "attention_backward", [&]<class T>() {
    using A = Acc<T>;
    const T* qp = q.data<T>();
    const T* kp = k.data<T>();
    const T* vp = v.data<T>();
    const T* op = out.data<T>();
    const T* gp = grad_out.data<T>();
    const A* lp = lse.data<A>();
    // dk, dv sum over rows and query heads: accumulate in A, round once at the end.
    std::vector<A> dk_acc(static_cast<size_t>(dk.numel()), A(0));
    std::vector<A> dv_acc(static_cast<size_t>(dv.numel()), A(0));
    std::vector<A> dq_row(static_cast<size_t>(s.head_dim));
    T* dqp = dq.data<T>();
    const A scale = static_cast<A>(s.scale);
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t h = 0; h < s.q_heads; ++h) {
        const int64_t g = h / s.group();
        for (int64_t i = 0; i < s.q_seq; ++i) {
          const T* qi = qp + at(qs, b, i, h);
          const T* doi = gp + at(os, b, i, h);
          const A delta = dot<T, A>(doi, op + at(os, b, i, h), s.v_head_dim);
          const A lse_i = lp[(b * s.q_heads + h) * s.q_seq + i];
          std::fill(dq_row.begin(), dq_row.end(), A(0));
          const bool drop = s.dropout.active();
          const DropoutRow<A> mask(s, b, h, i);
          const int64_t n = s.visible_keys(i);
          for (int64_t j = 0; j < n; ++j) {
            const T* kj = kp + at(ks, b, j, g);
            const T* vj = vp + at(vs, b, j, g);
            const A p_soft = std::exp(scale * dot<T, A>(qi, kj, s.head_dim) - lse_i);
            A dp = dot<T, A>(doi, vj, s.v_head_dim);
            A p = p_soft;  // what multiplied v in the forward
            if (drop) {
              const A c = mask(j);
              dp *= c;
              p *= c;
            }
            const A ds = p_soft * (dp - delta);
            A* dkj = dk_acc.data() + at(ks, b, j, g);
            A* dvj = dv_acc.data() + at(vs, b, j, g);
            for (int64_t d = 0; d < s.head_dim; ++d) {
              dq_row[d] += ds * static_cast<A>(kj[d]);
              dkj[d] += scale * ds * static_cast<A>(qi[d]);
            }
            for (int64_t d = 0; d < s.v_head_dim; ++d) dvj[d] += p * static_cast<A>(doi[d]);
          }
          T* dqi = dqp + at(qs, b, i, h);
          for (int64_t d = 0; d < s.head_dim; ++d) dqi[d] = T(scale * dq_row[d]);
        }
      }
    }
    T* dkp = dk.data<T>();
    T* dvp = dv.data<T>();
    for (size_t e = 0; e < dk_acc.size(); ++e) dkp[e] = T(dk_acc[e]);
    for (size_t e = 0; e < dv_acc.size(); ++e) dvp[e] = T(dv_acc[e]);
  });
}

}  // namespace

const char* attention_backend_name(AttentionBackend backend) {
  switch (backend) {
    case AttentionBackend::automatic:
      return "automatic";
    case AttentionBackend::cudnn:
      return "cudnn";
    case AttentionBackend::native:
      return "native";
  }
  return "?";
}

AttentionBackend parse_attention_backend(const std::string& name) {
  for (AttentionBackend b :
       {AttentionBackend::automatic, AttentionBackend::cudnn, AttentionBackend::native})
    if (name == attention_backend_name(b)) return b;
  MOE_FAIL("unknown attention backend '", name, "'; one of: automatic, cudnn, native");
}

AttentionBackend attention_backend_for(const Tensor& q, const Tensor& k, const Tensor& v,
                                       const AttentionOptions& options, std::string* reason) {
  const AttentionShape shape = check_qkv(q, k, v, options, "attention_backend_for");
  if (reason) reason->clear();
  if (!q.is_cuda() || options.backend == AttentionBackend::native) return AttentionBackend::native;
  if (options.dropout.active()) {
    if (reason) *reason = "attention dropout: the cuDNN graphs are built without dropout";
    return AttentionBackend::native;
  }
  if (shape.batch == 0 || shape.q_seq == 0) {
    if (reason) *reason = "empty inputs: no kernel runs";
    return AttentionBackend::native;
  }
#if MOE_WITH_CUDA
  // Outputs are freshly allocated (aligned) by the op: q, k, v are the tensors that matter.
  for (detail::CudnnPass pass : {detail::CudnnPass::forward, detail::CudnnPass::backward})
    if (!detail::cudnn_attention_can_run(pass, shape, options.deterministic, {&q, &k, &v}, reason))
      return AttentionBackend::native;
  return AttentionBackend::cudnn;
#else
  return AttentionBackend::native;
#endif
}

double attention_scale(const AttentionOptions& options, int64_t head_dim) {
  if (options.softmax_scale) return *options.softmax_scale;
  MOE_CHECK(head_dim >= 1, "attention: head dim must be positive, got ", head_dim);
  return 1.0 / std::sqrt(static_cast<double>(head_dim));
}

AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionOptions& options) {
  const char* op = "attention_forward";
  const AttentionShape shape = check_qkv(q, k, v, options, op);
  AttentionOutput result;
  result.out = Tensor::empty(out_shape(shape), q.dtype(), q.device());
  result.lse = Tensor::empty({shape.batch, shape.q_heads, shape.q_seq}, lse_dtype_for(q.dtype()),
                             q.device());
  if (q.is_cuda()) {
    MOE_CUDA_ONLY(
        if (!options.dropout.active() &&
            detail::use_cudnn_attention(detail::CudnnPass::forward, shape, options,
                                        {&q, &k, &v, &result.out, &result.lse})) {
          detail::attention_forward_cudnn(shape, q, k, v, result.out, result.lse);
        } else {
          detail::attention_forward_cuda(shape, q, k, v, result.out, result.lse);
        } return result;)
  }
  forward_cpu(shape, q, k, v, result.out, result.lse);
  return result;
}

AttentionGrads attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse,
                                  const AttentionOptions& options) {
  const char* op = "attention_backward";
  const AttentionShape shape = check_qkv(q, k, v, options, op);
  check_defined(grad_out, op, "grad_out");
  check_defined(out, op, "out");
  check_defined(lse, op, "lse");
  check_shape(out, out_shape(shape), op, "out");
  check_shape(grad_out, out_shape(shape), op, "grad_out");
  check_shape(lse, {shape.batch, shape.q_heads, shape.q_seq}, op, "lse");
  check_dtype(out, q.dtype(), op, "out");
  check_dtype(grad_out, q.dtype(), op, "grad_out");
  check_dtype(lse, lse_dtype_for(q.dtype()), op, "lse");
  check_same_device(q, out, op);
  check_same_device(q, grad_out, op);
  check_same_device(q, lse, op);
  AttentionGrads grads;
  grads.q = Tensor::empty(q.shape(), q.dtype(), q.device());
  if (shape.batch == 0 || shape.q_seq == 0) {  // no query row: the keys get no gradient
    grads.k = Tensor::zeros(k.shape(), k.dtype(), k.device());
    grads.v = Tensor::zeros(v.shape(), v.dtype(), v.device());
    return grads;
  }
  grads.k = Tensor::empty(k.shape(), k.dtype(), k.device());
  grads.v = Tensor::empty(v.shape(), v.dtype(), v.device());
  if (q.is_cuda()) {
    MOE_CUDA_ONLY(
        if (!options.dropout.active() &&
            detail::use_cudnn_attention(
                detail::CudnnPass::backward, shape, options,
                {&q, &k, &v, &out, &grad_out, &lse, &grads.q, &grads.k, &grads.v})) {
          detail::attention_backward_cudnn(shape, options.deterministic, grad_out, q, k, v, out,
                                           lse, grads.q, grads.k, grads.v);
        } else {
          detail::attention_backward_cuda(shape, grad_out, q, k, v, out, lse, grads.q, grads.k,
                                          grads.v);
        } return grads;)
  }
  backward_cpu(shape, grad_out, q, k, v, out, lse, grads.q, grads.k, grads.v);
  return grads;
}

}  // namespace moe::ops
