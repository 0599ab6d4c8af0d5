// Sinkhorn balancing and sinkhorn routing, and the router's input jitter (router.h): entry
// points and CPU reference. CUDA kernels: router_sinkhorn_cuda.cu.
//
// Sinkhorn (as Megatron's `sinkhorn`): C = exp(z) [T, E], d0 = 1_T, d1 = 1_E, repeat
//   d0_t = 1 / (T (sum_e C_te d1_e + 1e-8)),  d1_e = 1 / (E (sum_t d0_t C_te + 1e-8))
// until mean_e |d1_e - d1_e(previous)| <= tol; then d1_e C_te d0_t has columns summing to 1/E
// and rows summing to ~1/T: a balanced soft assignment whose top-k are the routes.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "moe/core/rng.h"
#include "moe/ops/router.h"
#include "moe/ops/router_cuda.h"
#include "moe/ops/router_rules.h"

namespace moe::ops {
namespace {

constexpr double kSinkhornEps = 1e-8;

struct SinkhornScaling {
  Tensor d0;  // [T] f64
  Tensor d1;  // [E] f64
};

template <class T>
void sinkhorn_scaling_cpu(const Tensor& logits, double tol, int max_iters, double* d0, double* d1) {
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  const T* z = logits.data<T>();
  std::vector<double> cost(static_cast<size_t>(num_tokens * num_experts));
  for (int64_t i = 0; i < num_tokens * num_experts; ++i)
    cost[i] = std::exp(static_cast<double>(z[i]));
  std::vector<double> d1_old(num_experts, 1.0), col(num_experts);
  for (int64_t t = 0; t < num_tokens; ++t) d0[t] = 1.0;
  for (int64_t e = 0; e < num_experts; ++e) d1[e] = 1.0;
  for (int iter = 0; iter < max_iters; ++iter) {
    for (int64_t t = 0; t < num_tokens; ++t) {
      double row = 0;
      for (int64_t e = 0; e < num_experts; ++e) row += cost[t * num_experts + e] * d1[e];
      d0[t] = 1.0 / (static_cast<double>(num_tokens) * (row + kSinkhornEps));
    }
    std::fill(col.begin(), col.end(), 0.0);
    for (int64_t t = 0; t < num_tokens; ++t)
      for (int64_t e = 0; e < num_experts; ++e) col[e] += d0[t] * cost[t * num_experts + e];
    double error = 0;
    for (int64_t e = 0; e < num_experts; ++e) {
      d1[e] = 1.0 / (static_cast<double>(num_experts) * (col[e] + kSinkhornEps));
      error += std::fabs(d1_old[e] - d1[e]);
      d1_old[e] = d1[e];
    }
    if (error / static_cast<double>(num_experts) <= tol) break;
  }
}

SinkhornScaling sinkhorn_scaling(const Tensor& logits, double tol, int max_iters) {
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  SinkhornScaling s;
  s.d0 = Tensor::empty({num_tokens}, DType::f64, logits.device());
  s.d1 = Tensor::empty({num_experts}, DType::f64, logits.device());
  if (num_tokens == 0) {  // nothing to balance; d1 is never read
    s.d1.fill_(1.0);
    return s;
  }
  if (logits.is_cuda()) {
    MOE_CUDA_ONLY(detail::sinkhorn_scaling_cuda(logits, tol, max_iters, s.d0, s.d1); return s;)
  }
  dispatch<DType::f64, DType::f32>(logits.dtype(), "sinkhorn", [&]<class T>() {
    sinkhorn_scaling_cpu<T>(logits, tol, max_iters, s.d0.data<double>(), s.d1.data<double>());
  });
  return s;
}

void check_sinkhorn_args(double tol, int max_iters, const char* op) {
  MOE_CHECK(tol >= 0 && std::isfinite(tol), op, ": tol = ", tol, " must be finite and >= 0");
  MOE_CHECK(max_iters >= 1, op, ": max_iters = ", max_iters, " must be >= 1");
}

// y = x * noise, noise = philox_uniform(seed, i, 1 - eps, 1 + eps): the forward on x and the
// backward on grad_out are the same operation.
Tensor apply_jitter(const Tensor& x, double eps, uint64_t seed, const char* op) {
  check_defined(x, op, "x");
  MOE_CHECK(eps >= 0 && eps < 1, op, ": eps = ", eps, " must be in [0, 1)");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::jitter_cuda(x, eps, seed, out); return out;)
  }
  const float lo = static_cast<float>(1.0 - eps), hi = static_cast<float>(1.0 + eps);
  dispatch_float(x.dtype(), op, [&]<class T>() {
    const T* in = x.data<T>();
    T* y = out.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) {
      const float noise = philox_uniform(seed, static_cast<uint64_t>(i), lo, hi);
      if constexpr (std::is_same_v<T, double>)
        y[i] = in[i] * static_cast<double>(noise);
      else
        y[i] = T(static_cast<float>(in[i]) * noise);
    }
  });
  return out;
}

}  // namespace

Tensor sinkhorn(const Tensor& logits, double tol, int max_iters) {
  constexpr const char* op = "sinkhorn";
  detail::check_router_logits(logits, op);
  check_sinkhorn_args(tol, max_iters, op);
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  const SinkhornScaling s = sinkhorn_scaling(logits, tol, max_iters);
  Tensor out = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  if (logits.is_cuda()) {
    MOE_CUDA_ONLY(detail::sinkhorn_apply_cuda(logits, s.d0, s.d1, out); return out;)
  }
  dispatch<DType::f64, DType::f32>(logits.dtype(), op, [&]<class T>() {
    const T* z = logits.data<T>();
    const double* d0 = s.d0.data<double>();
    const double* d1 = s.d1.data<double>();
    T* y = out.data<T>();
    for (int64_t t = 0; t < num_tokens; ++t)
      for (int64_t e = 0; e < num_experts; ++e) {
        const int64_t i = t * num_experts + e;
        y[i] = static_cast<T>(d1[e] * std::exp(static_cast<double>(z[i])) * d0[t]);
      }
  });
  return out;
}

TopKRouting sinkhorn_routing_forward(const Tensor& logits, int64_t topk) {
  constexpr const char* op = "sinkhorn_routing_forward";
  detail::check_router_logits(logits, op);
  MOE_CHECK(topk >= 1 && topk <= logits.size(1), op, ": topk = ", topk,
            " must be in [1, E = ", logits.size(1), "]");
  const SinkhornScaling s = sinkhorn_scaling(logits, 1e-4, 1000);
  return detail::run_routing(logits, topk, detail::sinkhorn_rule(topk), {}, s.d0, s.d1);
}

Tensor sinkhorn_routing_backward(const Tensor& grad_probs, const TopKRouting& routing,
                                 const Tensor& logits, int64_t topk) {
  constexpr const char* op = "sinkhorn_routing_backward";
  detail::check_router_logits(logits, op);
  MOE_CHECK(topk >= 1 && topk <= logits.size(1), op, ": topk = ", topk,
            " must be in [1, E = ", logits.size(1), "]");
  check_defined(grad_probs, op, "grad_probs");
  check_dim(grad_probs, 2, op, "grad_probs");
  MOE_CHECK(grad_probs.size(1) == topk, op, ": grad_probs ", shape_str(grad_probs.shape()),
            " has not topk = ", topk, " columns");
  return detail::run_routing_backward(grad_probs, routing, logits, detail::sinkhorn_rule(topk), op);
}

Tensor input_jitter_forward(const Tensor& x, double eps, uint64_t seed) {
  return apply_jitter(x, eps, seed, "input_jitter_forward");
}

Tensor input_jitter_backward(const Tensor& grad_out, double eps, uint64_t seed) {
  return apply_jitter(grad_out, eps, seed, "input_jitter_backward");
}

}  // namespace moe::ops
