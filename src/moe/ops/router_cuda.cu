// CUDA top-k routing (router.h): one warp per token does the whole routing pass (scores,
// group-limited selection, top-k, probs), and one warp per token does its backward. The
// rules and the ranking order are those of the CPU reference (router_rules.h), evaluated in
// fp64 like it, so both choose the same experts.
//
// Shared memory per warp: the token's E selection values and G group scores (fp64) and one
// flag byte each (expert taken / masked, group kept). Lanes own experts e = lane + 32 i and
// groups g = lane + 32 i; outside the group phase a lane only touches what it owns, so the
// top-k rounds need no warp barrier.
#include <cmath>

#include "moe/core/cuda_utils.h"
#include "moe/ops/router_cuda.h"
#include "moe/ops/router_warp.cuh"

namespace moe::ops::detail {
namespace {

template <class T>
struct RouteArgs {
  const T* logits;     // [T, E]
  const double* bias;  // [E] or null
  const double* d0;    // [T] sinkhorn, or null
  const double* d1;    // [E] sinkhorn, or null
  T* probs;            // [T, K]
  int32_t* ids;        // [T, K]
  T* scores;           // [T, E]
  int64_t num_tokens;
  int64_t num_experts;
  int64_t topk;        // <= 32: lane j finalises choice j
  int64_t group_size;  // E / G when groups are on
  int64_t per_group;   // group_score_size: the values summed into a group's score
  int per_warp_bytes;
  RoutingRule rule;
};

template <class T>
__global__ void route_kernel(RouteArgs<T> a) {
  extern __shared__ __align__(16) unsigned char shared[];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  const int64_t E = a.num_experts, K = a.topk, G = a.rule.num_groups;
  double* sel = reinterpret_cast<double*>(shared + warp * a.per_warp_bytes);
  double* group_score = sel + E;
  unsigned char* taken = reinterpret_cast<unsigned char*>(group_score + G);
  unsigned char* group_kept = taken + E;
  const bool softmax = a.rule.score == ScoreKind::softmax;

  for (int64_t t = blockIdx.x * int64_t(warps) + warp; t < a.num_tokens;
       t += int64_t(gridDim.x) * warps) {
    const T* z = a.logits + t * E;
    // Softmax statistics of the row (the max is exact, so exp(z - m) matches the CPU's).
    double m = 0, sum = 1;
    if (softmax) {
      m = -INFINITY;
      for (int64_t e = lane; e < E; e += kWarp) m = fmax(m, static_cast<double>(z[e]));
      m = warp_max(m);
      sum = 0;
      for (int64_t e = lane; e < E; e += kWarp) sum += exp(static_cast<double>(z[e]) - m);
      sum = warp_sum(sum);
    }
    auto score_of = [&](double zv) { return softmax ? exp(zv - m) / sum : sigmoid_f64(zv); };

    for (int64_t e = lane; e < E; e += kWarp) {
      const double zv = static_cast<double>(z[e]);
      const double s = score_of(zv);
      a.scores[t * E + e] = static_cast<T>(s);
      double v = 0;
      switch (a.rule.select) {
        case SelectKind::logits:
          v = zv;
          break;
        case SelectKind::scores:
          v = s;
          break;
        case SelectKind::scores_plus_bias:
          v = s + a.bias[e];
          break;
        case SelectKind::sinkhorn:
          v = a.d1[e] * exp(zv) * a.d0[t];
          break;
        case SelectKind::forced:
          break;
      }
      sel[e] = v;
      taken[e] = 0;
    }

    int64_t my_id = -1;  // lane j < K: the j-th chosen expert
    if (a.rule.select == SelectKind::forced) {
      if (lane < K) my_id = forced_expert(t, lane, K, E);
    } else {
      if (G > 0) {
        __syncwarp();
        // A group's score: its top per_group values, added in ranking order (as the CPU).
        // The owning lane marks them taken while it searches; all flags are reset below.
        for (int64_t g = lane; g < G; g += kWarp) {
          const int64_t base = g * a.group_size;
          double total = 0;
          for (int64_t r = 0; r < a.per_group; ++r) {
            double best_value = 0;
            int64_t best = -1;
            for (int64_t e = base; e < base + a.group_size; ++e)
              if (!taken[e] && ranks_before(sel[e], e, best_value, best)) {
                best_value = sel[e];
                best = e;
              }
            if (best >= 0) taken[best] = 1;
            total += best_value;
          }
          group_score[g] = total;
          group_kept[g] = 0;
        }
        __syncwarp();
        for (int64_t r = 0; r < a.rule.group_topk; ++r) {
          double best_value = 0;
          int64_t best = -1;
          for (int64_t g = lane; g < G; g += kWarp)
            if (!group_kept[g] && ranks_before(group_score[g], g, best_value, best)) {
              best_value = group_score[g];
              best = g;
            }
          warp_best(best_value, best);
          if (best >= 0 && best % kWarp == lane) group_kept[best] = 1;  // the owner lane
        }
        __syncwarp();
        for (int64_t e = lane; e < E; e += kWarp) taken[e] = group_kept[e / a.group_size] ? 0 : 1;
        __syncwarp();
      }
      for (int64_t j = 0; j < K; ++j) {
        double best_value = 0;
        int64_t best = -1;
        for (int64_t e = lane; e < E; e += kWarp)
          if (!taken[e] && ranks_before(sel[e], e, best_value, best)) {
            best_value = sel[e];
            best = e;
          }
        warp_best(best_value, best);
        if (best >= 0 && best % kWarp == lane) taken[best] = 1;
        if (lane == j) my_id = best;
      }
    }

    // probs from the chosen experts: lane j holds choice j.
    const bool active = lane < K && my_id >= 0;
    const double z_chosen = active ? static_cast<double>(z[my_id]) : 0.0;
    double q = 0;
    switch (a.rule.prob) {
      case ProbRule::softmax_of_chosen: {
        const double mm = warp_max(active ? z_chosen : -INFINITY);
        const double ex = active ? exp(z_chosen - mm) : 0.0;
        q = ex / warp_sum(ex);
        break;
      }
      case ProbRule::gather:
        q = active ? score_of(z_chosen) : 0.0;
        break;
      case ProbRule::gather_renorm: {
        const double s = active ? score_of(z_chosen) : 0.0;
        q = s / (warp_sum(s) + kRenormEps);
        break;
      }
    }
    if (lane < K) {
      a.probs[t * K + lane] = static_cast<T>(q * a.rule.scaling);
      a.ids[t * K + lane] = static_cast<int32_t>(my_id);
    }
    __syncwarp();  // the next token reuses this warp's shared memory
  }
}

template <class T>
struct RouteBackwardArgs {
  const T* grad_probs;  // [T, K]
  const int32_t* ids;   // [T, K]
  const T* logits;      // [T, E]
  const T* scores;      // [T, E] (null for softmax_of_chosen)
  T* d_logits;          // [T, E]
  int64_t num_tokens;
  int64_t num_experts;
  int64_t topk;
  RoutingRule rule;
};

// The backward rules of router_cpu.cpp (route_backward_rows_cpu), one warp per token:
// the row is written as its dense part first, then (after a warp barrier) the K chosen entries.
template <class T>
__global__ void route_backward_kernel(RouteBackwardArgs<T> a) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  const int64_t E = a.num_experts, K = a.topk;
  for (int64_t t = blockIdx.x * int64_t(warps) + warp; t < a.num_tokens;
       t += int64_t(gridDim.x) * warps) {
    T* d = a.d_logits + t * E;
    int64_t id = lane < K ? a.ids[t * K + lane] : -1;
    const bool active = id >= 0 && id < E;
    const double g =
        active ? a.rule.scaling * static_cast<double>(a.grad_probs[t * K + lane]) : 0.0;
    double chosen = 0;  // the value written at d[id]
    if (a.rule.prob == ProbRule::softmax_of_chosen) {
      const double zv = active ? static_cast<double>(a.logits[t * E + id]) : -INFINITY;
      const double m = warp_max(zv);
      const double ex = active ? exp(zv - m) : 0.0;
      const double p = ex / warp_sum(ex);
      const double dot = warp_sum(p * g);
      chosen = p * (g - dot);
      for (int64_t e = lane; e < E; e += kWarp) d[e] = T(0);
    } else {
      const T* s = a.scores + t * E;
      const double q = active ? static_cast<double>(s[id]) : 0.0;
      double dq = g;
      if (a.rule.prob == ProbRule::gather_renorm) {
        const double denom = warp_sum(q) + kRenormEps;
        const double dot = warp_sum(g * q);
        dq = active ? g / denom - dot / (denom * denom) : 0.0;
      }
      if (a.rule.score == ScoreKind::sigmoid) {
        chosen = dq * q * (1 - q);
        for (int64_t e = lane; e < E; e += kWarp) d[e] = T(0);
      } else {
        const double dot = warp_sum(q * dq);
        chosen = q * (dq - dot);
        for (int64_t e = lane; e < E; e += kWarp)
          d[e] = static_cast<T>(-static_cast<double>(s[e]) * dot);
      }
    }
    __syncwarp();  // orders the dense writes before the chosen ones
    if (active) d[id] = static_cast<T>(chosen);
    __syncwarp();
  }
}

constexpr int kMaxSharedBytes = 48 * 1024;
constexpr int kRouteWarpsPerBlock = 4;

}  // namespace

void route_cuda(const Tensor& logits, int64_t topk, const RoutingRule& rule, const Tensor& bias64,
                const Tensor& sinkhorn_d0, const Tensor& sinkhorn_d1, TopKRouting& routing) {
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  MOE_CHECK(topk <= kWarp, "CUDA routing: topk = ", topk, " exceeds ", kWarp);
  const int64_t groups = rule.num_groups;
  const int64_t per_warp = ((num_experts + groups) * 9 + 15) / 16 * 16;
  MOE_CHECK(per_warp <= kMaxSharedBytes, "CUDA routing: E = ", num_experts, " (with ", groups,
            " groups) needs ", per_warp, " bytes of shared memory per token, more than ",
            kMaxSharedBytes);
  if (num_tokens == 0) return;
  int warps = kRouteWarpsPerBlock;
  while (warps > 1 && warps * per_warp > kMaxSharedBytes) --warps;
  dispatch<DType::f64, DType::f32>(logits.dtype(), "CUDA routing", [&]<class T>() {
    RouteArgs<T> a{};
    a.logits = logits.data<T>();
    a.bias = bias64.defined() ? bias64.data<double>() : nullptr;
    a.d0 = sinkhorn_d0.defined() ? sinkhorn_d0.data<double>() : nullptr;
    a.d1 = sinkhorn_d1.defined() ? sinkhorn_d1.data<double>() : nullptr;
    a.probs = routing.probs.data<T>();
    a.ids = routing.expert_ids.data<int32_t>();
    a.scores = routing.scores.data<T>();
    a.num_tokens = num_tokens;
    a.num_experts = num_experts;
    a.topk = topk;
    a.group_size = groups > 0 ? num_experts / groups : 0;
    a.per_group = rule.group_score_size;
    a.per_warp_bytes = static_cast<int>(per_warp);
    a.rule = rule;
    route_kernel<T><<<cuda::blocks_for(num_tokens, warps), warps * kWarp,
                      static_cast<size_t>(warps * per_warp), cuda::stream_of(logits)>>>(a);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

void route_backward_cuda(const Tensor& grad_probs, const TopKRouting& routing, const Tensor& logits,
                         const RoutingRule& rule, Tensor& d_logits) {
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  const int64_t topk = grad_probs.size(1);
  MOE_CHECK(topk <= kWarp, "CUDA routing backward: topk = ", topk, " exceeds ", kWarp);
  if (num_tokens == 0) return;
  dispatch<DType::f64, DType::f32>(logits.dtype(), "CUDA routing backward", [&]<class T>() {
    RouteBackwardArgs<T> a{};
    a.grad_probs = grad_probs.data<T>();
    a.ids = routing.expert_ids.data<int32_t>();
    a.logits = logits.data<T>();
    a.scores = rule.prob == ProbRule::softmax_of_chosen ? nullptr : routing.scores.data<T>();
    a.d_logits = d_logits.data<T>();
    a.num_tokens = num_tokens;
    a.num_experts = num_experts;
    a.topk = topk;
    a.rule = rule;
    route_backward_kernel<T>
        <<<row_blocks(num_tokens), kRowWarpsPerBlock * kWarp, 0, cuda::stream_of(logits)>>>(a);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::ops::detail
