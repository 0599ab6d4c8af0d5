// Fused linear + cross-entropy (cross_entropy.h): public entry points (argument checks, device
// dispatch) and the CPU reference. The reference materialises the shard's logits [T, V_r] in
// the compute type (f64 for f64 inputs, f32 otherwise, through ops::gemm) and does every
// per-token reduction in double; the CUDA version (cross_entropy_cuda.cu) walks the
// vocabulary in chunks instead.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "moe/ops/cross_entropy.h"
#include "moe/ops/cross_entropy_cuda.h"
#include "moe/ops/gemm.h"

namespace moe::ops {
namespace {

bool is_half(DType dt) {
  return dt == DType::bf16 || dt == DType::f16;
}

// The dtype of the compute, the partials and the results: f64 for f64 inputs, f32 otherwise.
DType result_dtype(DType input) {
  return input == DType::f64 ? DType::f64 : DType::f32;
}

// hidden [T, H] and weight [V_r, H] of one allowed dtype; labels [T] i64/i32; one device.
void check_inputs(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                  const char* op) {
  check_defined(hidden, op, "hidden");
  check_defined(weight, op, "weight");
  check_defined(labels, op, "labels");
  check_dim(hidden, 2, op, "hidden");
  check_dim(weight, 2, op, "weight");
  const DType dt = hidden.dtype();
  if (hidden.is_cuda()) {
    MOE_CHECK(dt == DType::f32 || dt == DType::bf16, op,
              ": hidden must be f32 or bf16 on CUDA, got ", dt);
  } else {
    MOE_CHECK(dt == DType::f64 || dt == DType::f32 || is_half(dt), op,
              ": hidden must be one of f64, f32, bf16, f16, got ", dt);
  }
  MOE_CHECK(weight.dtype() == dt, op, ": weight is ", weight.dtype(), " but hidden is ", dt);
  MOE_CHECK(weight.size(1) == hidden.size(1), op, ": weight ", shape_str(weight.shape()),
            " must be [V, H] with H = ", hidden.size(1), " (hidden ", shape_str(hidden.shape()),
            ")");
  check_same_device(weight, hidden, op);
  check_shape(labels, {hidden.size(0)}, op, "labels");
  MOE_CHECK(labels.dtype() == DType::i64 || labels.dtype() == DType::i32, op,
            ": labels must be i64 or i32, got ", labels.dtype());
  check_same_device(labels, hidden, op);
}

void check_mask(const Tensor& loss_mask, const Tensor& labels, const char* op) {
  if (!loss_mask.defined()) return;
  check_shape(loss_mask, labels.shape(), op, "loss_mask");
  check_dtype(loss_mask, DType::f32, op, "loss_mask");
  check_same_device(loss_mask, labels, op);
}

void check_options(const CrossEntropyOptions& options, const char* op) {
  MOE_CHECK(options.chunk_size >= 1, op, ": chunk_size = ", options.chunk_size, " must be >= 1");
}

// Labels as int64 on the host (CPU tensors only).
std::vector<int64_t> labels_cpu(const Tensor& labels) {
  std::vector<int64_t> out(static_cast<size_t>(labels.numel()));
  dispatch<DType::i64, DType::i32>(labels.dtype(), "cross_entropy (labels)", [&]<class L>() {
    const L* p = labels.data<L>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<int64_t>(p[i]);
  });
  return out;
}

// A tensor in the compute type: f64 stays, f32 stays, bf16/f16 are upcast to f32.
Tensor compute_copy(const Tensor& t) {
  return is_half(t.dtype()) ? t.to(DType::f32) : t;
}

// logits [T, V_r] = h W^T in the compute type.
Tensor logits_cpu(const Tensor& hidden, const Tensor& weight) {
  return matmul(compute_copy(hidden), compute_copy(weight), false, true);
}

// Calls fn.template operator()<A>() with A the C++ compute type of the result dtype.
template <class Fn>
void with_result_type(DType result, Fn&& fn) {
  dispatch<DType::f64, DType::f32>(result, "cross_entropy", std::forward<Fn>(fn));
}

CrossEntropyPartials allocate_partials(int64_t tokens, DType dtype, Device device) {
  return {Tensor::empty({tokens}, dtype, device), Tensor::empty({tokens}, dtype, device),
          Tensor::empty({tokens}, dtype, device)};
}

void partials_cpu(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                  int64_t vocab_start, CrossEntropyPartials& out) {
  const int64_t tokens = hidden.size(0), shard = weight.size(0);
  const Tensor logits = logits_cpu(hidden, weight);
  const std::vector<int64_t> y = labels_cpu(labels);
  with_result_type(out.max.dtype(), [&]<class A>() {
    const A* z = logits.data<A>();
    A* m_out = out.max.data<A>();
    A* s_out = out.sum_exp.data<A>();
    A* a_out = out.label_logit.data<A>();
    for (int64_t t = 0; t < tokens; ++t) {
      const A* row = z + t * shard;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t v = 0; v < shard; ++v) m = std::max(m, static_cast<double>(row[v]));
      double s = 0;
      if (shard > 0)
        for (int64_t v = 0; v < shard; ++v) s += std::exp(static_cast<double>(row[v]) - m);
      const int64_t local = y[t] - vocab_start;
      m_out[t] = static_cast<A>(m);
      s_out[t] = static_cast<A>(s);
      a_out[t] = local >= 0 && local < shard ? row[local] : A(0);
    }
  });
}

// Merges the shards' partials and reduces them to the loss (formulas in cross_entropy.h).
void combine_cpu(const std::vector<CrossEntropyPartials>& shards, const Tensor& labels,
                 const Tensor& loss_mask, int64_t vocab_size, const CrossEntropyOptions& options,
                 CrossEntropyResult& out, const char* op) {
  const int64_t tokens = labels.numel();
  const std::vector<int64_t> y = labels_cpu(labels);
  const float* mask = loss_mask.defined() ? loss_mask.data<float>() : nullptr;
  with_result_type(out.loss.dtype(), [&]<class A>() {
    A* lse_out = out.logsumexp.data<A>();
    A* l_out = out.token_losses.data<A>();
    double total = 0, weight_sum = 0;
    for (int64_t t = 0; t < tokens; ++t) {
      double big = -std::numeric_limits<double>::infinity();
      for (const CrossEntropyPartials& p : shards)
        big = std::max(big, static_cast<double>(p.max.data<A>()[t]));
      double s = 0, a = 0;
      for (const CrossEntropyPartials& p : shards) {
        const double m = static_cast<double>(p.max.data<A>()[t]);
        // An empty shard (m = -inf, s = 0) adds nothing; exp(-inf - -inf) would be NaN.
        if (m != -std::numeric_limits<double>::infinity())
          s += static_cast<double>(p.sum_exp.data<A>()[t]) * std::exp(m - big);
        a += static_cast<double>(p.label_logit.data<A>()[t]);
      }
      const double lse = big + std::log(s);
      lse_out[t] = static_cast<A>(lse);
      double loss = 0;
      if (y[t] != options.ignore_index) {
        MOE_CHECK(y[t] >= 0 && y[t] < vocab_size, op, ": label ", y[t], " of token ", t,
                  " is outside [0, ", vocab_size,
                  ") and is not ignore_index = ", options.ignore_index);
        loss = lse - a;
        const double w = mask ? static_cast<double>(mask[t]) : 1.0;
        if (w != 0) {  // a masked-out token contributes nothing, not even NaN
          total += w * loss;
          weight_sum += w;
        }
      }
      l_out[t] = static_cast<A>(loss);
    }
    const bool mean = options.reduction == CrossEntropyReduction::mean;
    out.loss.data<A>()[0] =
        static_cast<A>(mean ? (weight_sum > 0 ? total / weight_sum : 0.0) : total);
    out.weight_sum.data<A>()[0] = static_cast<A>(weight_sum);
  });
}

// The per-token factor of d z: g w_t / N (mean) or g w_t (sum); 0 for ignored tokens.
std::vector<double> token_factors(double grad_loss, const std::vector<int64_t>& y,
                                  const Tensor& loss_mask, double weight_sum,
                                  const CrossEntropyOptions& options) {
  const float* mask = loss_mask.defined() ? loss_mask.data<float>() : nullptr;
  const bool mean = options.reduction == CrossEntropyReduction::mean;
  std::vector<double> factor(y.size(), 0.0);
  for (size_t t = 0; t < y.size(); ++t) {
    if (y[t] == options.ignore_index) continue;
    const double w = mask ? static_cast<double>(mask[t]) : 1.0;
    if (w == 0) continue;
    if (mean) {
      factor[t] = weight_sum > 0 ? grad_loss * w / weight_sum : 0.0;
    } else {
      factor[t] = grad_loss * w;
    }
  }
  return factor;
}

Tensor backward_cpu(double grad_loss, const Tensor& hidden, const Tensor& weight,
                    const Tensor& labels, const Tensor& loss_mask, const CrossEntropyResult& saved,
                    Tensor& grad_weight, const CrossEntropyOptions& options, int64_t vocab_start) {
  const int64_t tokens = hidden.size(0), shard = weight.size(0);
  const Tensor h = compute_copy(hidden), w = compute_copy(weight);
  Tensor dz = matmul(h, w, false, true);  // the logits, turned into d z in place
  const std::vector<int64_t> y = labels_cpu(labels);
  with_result_type(dz.dtype(), [&]<class A>() {
    const std::vector<double> factor = token_factors(
        grad_loss, y, loss_mask, static_cast<double>(saved.weight_sum.data<A>()[0]), options);
    const A* lse = saved.logsumexp.data<A>();
    A* d = dz.data<A>();
    for (int64_t t = 0; t < tokens; ++t) {
      A* row = d + t * shard;
      if (factor[t] == 0) {  // zeros, not 0 * (possibly NaN) logits
        for (int64_t v = 0; v < shard; ++v) row[v] = A(0);
        continue;
      }
      const int64_t local = y[t] - vocab_start;
      for (int64_t v = 0; v < shard; ++v) {
        const double p = std::exp(static_cast<double>(row[v]) - static_cast<double>(lse[t]));
        row[v] = static_cast<A>(factor[t] * (p - (v == local ? 1.0 : 0.0)));
      }
    }
  });
  if (grad_weight.defined()) gemm(dz, true, h, false, grad_weight, 1.0f, 1.0f);
  const Tensor dh = matmul(dz, w);
  return dh.dtype() == hidden.dtype() ? dh : dh.to(hidden.dtype());
}

}  // namespace

CrossEntropyPartials linear_cross_entropy_partials(const Tensor& hidden, const Tensor& weight,
                                                   const Tensor& labels, int64_t vocab_start,
                                                   const CrossEntropyOptions& options) {
  const char* op = "linear_cross_entropy_partials";
  check_inputs(hidden, weight, labels, op);
  check_options(options, op);
  MOE_CHECK(vocab_start >= 0, op, ": vocab_start = ", vocab_start, " must be >= 0");
  CrossEntropyPartials out =
      allocate_partials(hidden.size(0), result_dtype(hidden.dtype()), hidden.device());
  if (hidden.is_cuda()) {
    MOE_CUDA_ONLY(detail::cross_entropy_partials_cuda(hidden, weight, labels, vocab_start,
                                                      options.chunk_size, out);
                  return out;)
  }
  partials_cpu(hidden, weight, labels, vocab_start, out);
  return out;
}

CrossEntropyResult cross_entropy_combine(const std::vector<CrossEntropyPartials>& shards,
                                         const Tensor& labels, const Tensor& loss_mask,
                                         int64_t vocab_size, const CrossEntropyOptions& options) {
  const char* op = "cross_entropy_combine";
  MOE_CHECK(!shards.empty(), op, ": needs at least one shard's partials");
  check_defined(labels, op, "labels");
  check_dim(labels, 1, op, "labels");
  MOE_CHECK(labels.dtype() == DType::i64 || labels.dtype() == DType::i32, op,
            ": labels must be i64 or i32, got ", labels.dtype());
  check_mask(loss_mask, labels, op);
  MOE_CHECK(vocab_size >= 1, op, ": vocab_size = ", vocab_size, " must be >= 1");
  const DType dt = shards.front().max.dtype();
  MOE_CHECK(dt == DType::f64 || dt == DType::f32, op, ": partials must be f64 or f32, got ", dt);
  MOE_CHECK(!labels.is_cuda() || dt == DType::f32, op, ": partials on CUDA must be f32, got ", dt);
  for (const CrossEntropyPartials& p : shards) {
    for (const Tensor* t : {&p.max, &p.sum_exp, &p.label_logit}) {
      check_defined(*t, op, "partials");
      check_shape(*t, labels.shape(), op, "partials");
      check_dtype(*t, dt, op, "partials");
      check_same_device(*t, labels, op);
    }
  }
  const Device device = labels.device();
  const int64_t tokens = labels.numel();
  CrossEntropyResult out{Tensor::empty({}, dt, device), Tensor::empty({tokens}, dt, device),
                         Tensor::empty({tokens}, dt, device), Tensor::empty({}, dt, device)};
  if (labels.is_cuda()) {
    MOE_CUDA_ONLY({
      if (shards.size() == 1) {
        detail::cross_entropy_finalize_cuda(shards.front(), labels, loss_mask, vocab_size, options,
                                            out);
        return out;
      }
      CrossEntropyPartials merged = allocate_partials(tokens, dt, device);
      detail::cross_entropy_merge_cuda(shards[0], shards[1], merged);
      for (size_t i = 2; i < shards.size(); ++i)
        detail::cross_entropy_merge_cuda(merged, shards[i], merged);
      detail::cross_entropy_finalize_cuda(merged, labels, loss_mask, vocab_size, options, out);
      return out;
    })
  }
  combine_cpu(shards, labels, loss_mask, vocab_size, options, out, op);
  return out;
}

CrossEntropyResult linear_cross_entropy_forward(const Tensor& hidden, const Tensor& weight,
                                                const Tensor& labels, const Tensor& loss_mask,
                                                const CrossEntropyOptions& options) {
  const char* op = "linear_cross_entropy_forward";
  check_inputs(hidden, weight, labels, op);
  check_mask(loss_mask, labels, op);
  MOE_CHECK(weight.size(0) >= 1, op, ": the vocabulary is empty (weight ",
            shape_str(weight.shape()), ")");
  std::vector<CrossEntropyPartials> shards{
      linear_cross_entropy_partials(hidden, weight, labels, 0, options)};
  return cross_entropy_combine(shards, labels, loss_mask, weight.size(0), options);
}

Tensor linear_cross_entropy_per_token(const Tensor& hidden, const Tensor& weight,
                                      const Tensor& labels, const CrossEntropyOptions& options) {
  return linear_cross_entropy_forward(hidden, weight, labels, Tensor(), options).token_losses;
}

Tensor linear_cross_entropy_backward(double grad_loss, const Tensor& hidden, const Tensor& weight,
                                     const Tensor& labels, const Tensor& loss_mask,
                                     const CrossEntropyResult& saved, Tensor& grad_weight,
                                     const CrossEntropyOptions& options, int64_t vocab_start) {
  const char* op = "linear_cross_entropy_backward";
  check_inputs(hidden, weight, labels, op);
  check_mask(loss_mask, labels, op);
  check_options(options, op);
  MOE_CHECK(vocab_start >= 0, op, ": vocab_start = ", vocab_start, " must be >= 0");
  const DType rt = result_dtype(hidden.dtype());
  check_defined(saved.logsumexp, op, "saved.logsumexp");
  check_shape(saved.logsumexp, labels.shape(), op, "saved.logsumexp");
  check_dtype(saved.logsumexp, rt, op, "saved.logsumexp");
  check_same_device(saved.logsumexp, hidden, op);
  check_defined(saved.weight_sum, op, "saved.weight_sum");
  check_shape(saved.weight_sum, {}, op, "saved.weight_sum");
  check_dtype(saved.weight_sum, rt, op, "saved.weight_sum");
  check_same_device(saved.weight_sum, hidden, op);
  if (grad_weight.defined()) {
    check_shape(grad_weight, weight.shape(), op, "grad_weight");
    check_dtype(grad_weight, rt, op, "grad_weight");
    check_same_device(grad_weight, hidden, op);
  }
  if (hidden.is_cuda()) {
    MOE_CUDA_ONLY({
      Tensor grad_hidden = Tensor::empty(hidden.shape(), hidden.dtype(), hidden.device());
      detail::linear_cross_entropy_backward_cuda(grad_loss, hidden, weight, labels, loss_mask,
                                                 saved, grad_weight, options, vocab_start,
                                                 grad_hidden);
      return grad_hidden;
    })
  }
  return backward_cpu(grad_loss, hidden, weight, labels, loss_mask, saved, grad_weight, options,
                      vocab_start);
}

CrossEntropyWithGrad linear_cross_entropy_forward_backward(double grad_loss, const Tensor& hidden,
                                                           const Tensor& weight,
                                                           const Tensor& labels,
                                                           const Tensor& loss_mask,
                                                           Tensor& grad_weight,
                                                           const CrossEntropyOptions& options) {
  const char* op = "linear_cross_entropy_forward_backward";
  if (!hidden.is_cuda()) {
    CrossEntropyWithGrad out;
    out.result = linear_cross_entropy_forward(hidden, weight, labels, loss_mask, options);
    out.grad_hidden = linear_cross_entropy_backward(grad_loss, hidden, weight, labels, loss_mask,
                                                    out.result, grad_weight, options);
    return out;
  }
  check_inputs(hidden, weight, labels, op);
  check_mask(loss_mask, labels, op);
  check_options(options, op);
  MOE_CHECK(options.fused_chunk_elements >= 1, op, ": fused_chunk_elements = ",
            options.fused_chunk_elements, " must be >= 1");
  MOE_CHECK(weight.size(0) >= 1, op, ": the vocabulary is empty (weight ",
            shape_str(weight.shape()), ")");
  const DType rt = result_dtype(hidden.dtype());
  if (grad_weight.defined()) {
    check_shape(grad_weight, weight.shape(), op, "grad_weight");
    check_dtype(grad_weight, rt, op, "grad_weight");
    check_same_device(grad_weight, hidden, op);
  }
  CrossEntropyWithGrad out;
  MOE_CUDA_ONLY({
    const int64_t tokens = labels.numel();
    const Device device = hidden.device();
    out.result = CrossEntropyResult{
        Tensor::empty({}, rt, device), Tensor::empty({tokens}, rt, device),
        Tensor::empty({tokens}, rt, device), Tensor::empty({}, rt, device)};
    out.grad_hidden = Tensor::empty(hidden.shape(), hidden.dtype(), device);
    detail::linear_cross_entropy_forward_backward_cuda(grad_loss, hidden, weight, labels,
                                                       loss_mask, grad_weight, options,
                                                       out.result, out.grad_hidden);
  })
  return out;
}

}  // namespace moe::ops
