// Router load-balancing ops (router.h): tokens-per-expert histograms, the aux-loss scores,
// aux_loss / seq_aux_loss / z_loss with their backward. Entry points (checks, device
// dispatch) and the CPU reference; the CUDA kernels are in router_losses_cuda.cu.
//
// aux_loss and seq_aux_loss are one computation, L = scale * sum_t sum_e s_te c_(t mod B), e:
//   aux_loss:     B = 1, scale = coeff * E / (K * T_total^2)
//   seq_aux_loss: B = num_sequences (token t = s * B + b), scale = coeff * E / (K * S_total^2 * B)
// so dL/ds_te = scale * c_(t mod B), e, which the backward carries through the score function.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "moe/ops/router.h"
#include "moe/ops/router_cuda.h"
#include "moe/ops/router_rules.h"

namespace moe::ops {
namespace {

using detail::ScoreKind;

ScoreKind kind_of(ScoreFunction f) {
  return f == ScoreFunction::softmax ? ScoreKind::softmax : ScoreKind::sigmoid;
}

// ---- histograms ----------------------------------------------------------------------------

Tensor histogram(const Tensor& expert_ids, int64_t num_experts, int64_t num_sequences,
                 const char* op) {
  check_defined(expert_ids, op, "expert_ids");
  check_dim(expert_ids, 2, op, "expert_ids");
  check_dtype(expert_ids, DType::i32, op, "expert_ids");
  MOE_CHECK(num_experts >= 1, op, ": num_experts = ", num_experts, " must be >= 1");
  MOE_CHECK(num_sequences >= 1, op, ": num_sequences = ", num_sequences, " must be >= 1");
  const int64_t num_tokens = expert_ids.size(0), topk = expert_ids.size(1);
  MOE_CHECK(num_tokens % num_sequences == 0, op, ": ", num_tokens,
            " tokens are not a multiple of num_sequences = ", num_sequences);
  Tensor counts = Tensor::zeros({num_sequences, num_experts}, DType::i64, expert_ids.device());
  if (expert_ids.is_cuda()) {
    MOE_CUDA_ONLY(detail::histogram_cuda(expert_ids, num_experts, num_sequences, counts);
                  return counts;)
  }
  const int32_t* ids = expert_ids.data<int32_t>();
  int64_t* c = counts.data<int64_t>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t j = 0; j < topk; ++j) {
      const int32_t e = ids[t * topk + j];
      if (e < 0) continue;  // a dropped slot
      MOE_CHECK(e < num_experts, op, ": expert id ", e, " at token ", t,
                " is >= E = ", num_experts);
      ++c[(t % num_sequences) * num_experts + e];
    }
  }
  return counts;
}

// ---- the weighted score sum behind aux_loss and seq_aux_loss --------------------------------

void check_scores_counts(const Tensor& scores, const Tensor& counts, int64_t num_sequences,
                         const char* op) {
  check_defined(scores, op, "scores");
  check_dim(scores, 2, op, "scores");
  MOE_CHECK(scores.dtype() == DType::f32 || scores.dtype() == DType::f64, op,
            ": scores must be f32 or f64, got ", scores.dtype());
  check_defined(counts, op, "counts");
  MOE_CHECK(counts.dtype() == DType::i64 || counts.dtype() == DType::i32 ||
                counts.dtype() == DType::f32 || counts.dtype() == DType::f64,
            op, ": counts must be i64, i32, f32 or f64, got ", counts.dtype());
  check_same_device(scores, counts, op);
  MOE_CHECK(num_sequences >= 1, op, ": num_sequences = ", num_sequences, " must be >= 1");
  MOE_CHECK(scores.size(0) % num_sequences == 0, op, ": ", scores.size(0),
            " tokens are not a multiple of num_sequences = ", num_sequences);
}

template <class T>
double weighted_score_sum_cpu(const Tensor& scores, const std::vector<double>& counts,
                              int64_t num_sequences) {
  const int64_t num_tokens = scores.size(0), num_experts = scores.size(1);
  const T* s = scores.data<T>();
  double total = 0;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const double* c = counts.data() + (t % num_sequences) * num_experts;
    double row = 0;
    for (int64_t e = 0; e < num_experts; ++e)
      row += static_cast<double>(s[t * num_experts + e]) * c[e];
    total += row;
  }
  return total;
}

Tensor weighted_score_sum(const Tensor& scores, const Tensor& counts, int64_t num_sequences,
                          double scale) {
  Tensor loss = Tensor::empty({}, scores.dtype(), scores.device());
  if (scores.is_cuda()) {
    MOE_CUDA_ONLY(detail::weighted_score_sum_cuda(scores, counts, num_sequences, scale, loss);
                  return loss;)
  }
  const std::vector<double> c = counts.to_double_vector();
  dispatch<DType::f64, DType::f32>(scores.dtype(), "aux loss", [&]<class T>() {
    loss.data<T>()[0] = static_cast<T>(scale * weighted_score_sum_cpu<T>(scores, c, num_sequences));
  });
  return loss;
}

// d_logits += the gradient of sum_te s_te g_te with g_te = scale * c_(t mod B), e, where
//   softmax: s = softmax(z),     dz_e = s_e (g_e - sum_i s_i g_i)
//   sigmoid: s = sig(z) / sum sig(z), dz_e = (g_e - sum_i s_i g_i) / sum sig * sig_e (1 - sig_e)
template <class T>
void weighted_score_sum_backward_cpu(double scale, const Tensor& scores,
                                     const std::vector<double>& counts, int64_t num_sequences,
                                     const Tensor& logits, ScoreKind kind, Tensor& d_logits) {
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  const T* s_all = scores.data<T>();
  const T* z_all = logits.data<T>();
  T* d_all = d_logits.data<T>();
  std::vector<double> sig(num_experts);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const double* c = counts.data() + (t % num_sequences) * num_experts;
    T* d = d_all + t * num_experts;
    if (kind == ScoreKind::softmax) {
      const T* s = s_all + t * num_experts;
      double dot = 0;
      for (int64_t e = 0; e < num_experts; ++e) dot += static_cast<double>(s[e]) * scale * c[e];
      for (int64_t e = 0; e < num_experts; ++e)
        d[e] = static_cast<T>(static_cast<double>(d[e]) +
                              static_cast<double>(s[e]) * (scale * c[e] - dot));
    } else {
      const T* z = z_all + t * num_experts;
      double sum = 0;
      for (int64_t e = 0; e < num_experts; ++e) {
        sig[e] = detail::sigmoid_f64(static_cast<double>(z[e]));
        sum += sig[e];
      }
      double dot = 0;
      for (int64_t e = 0; e < num_experts; ++e) dot += sig[e] / sum * scale * c[e];
      for (int64_t e = 0; e < num_experts; ++e)
        d[e] = static_cast<T>(static_cast<double>(d[e]) +
                              (scale * c[e] - dot) / sum * sig[e] * (1 - sig[e]));
    }
  }
}

void weighted_score_sum_backward(double scale, const Tensor& scores, const Tensor& counts,
                                 int64_t num_sequences, const Tensor& logits,
                                 ScoreFunction score_function, Tensor& d_logits, const char* op) {
  detail::check_router_logits(logits, op);
  check_shape(scores, logits.shape(), op, "scores");
  check_dtype(scores, logits.dtype(), op, "scores");
  check_same_device(scores, logits, op);
  check_defined(d_logits, op, "d_logits");
  check_shape(d_logits, logits.shape(), op, "d_logits");
  check_dtype(d_logits, logits.dtype(), op, "d_logits");
  check_same_device(d_logits, logits, op);
  if (logits.is_cuda()) {
    MOE_CUDA_ONLY(detail::weighted_score_sum_backward_cuda(scale, scores, counts, num_sequences,
                                                           logits, kind_of(score_function),
                                                           d_logits);
                  return;)
  }
  const std::vector<double> c = counts.to_double_vector();
  dispatch<DType::f64, DType::f32>(logits.dtype(), op, [&]<class T>() {
    weighted_score_sum_backward_cpu<T>(scale, scores, c, num_sequences, logits,
                                       kind_of(score_function), d_logits);
  });
}

double aux_scale(const Tensor& scores, int64_t total_tokens, int64_t topk, double coeff,
                 const char* op) {
  MOE_CHECK(topk >= 1, op, ": topk = ", topk, " must be >= 1");
  MOE_CHECK(total_tokens > 0 || (total_tokens == 0 && scores.size(0) == 0), op,
            ": total_tokens = ", total_tokens, " must be > 0 for ", scores.size(0), " tokens");
  if (total_tokens == 0) return 0.0;
  const double n = static_cast<double>(total_tokens);
  return coeff * static_cast<double>(scores.size(1)) / (static_cast<double>(topk) * n * n);
}

void check_aux_counts(const Tensor& scores, const Tensor& counts, const char* op) {
  check_dim(counts, 1, op, "counts");
  check_shape(counts, {scores.size(1)}, op, "counts");
}

void check_seq_counts(const Tensor& scores, const Tensor& counts, int64_t num_sequences,
                      const char* op) {
  check_dim(counts, 2, op, "counts");
  check_shape(counts, {num_sequences, scores.size(1)}, op, "counts");
}

// ---- z-loss --------------------------------------------------------------------------------

template <class T>
double logsumexp_row(const T* z, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t e = 0; e < n; ++e) m = std::max(m, static_cast<double>(z[e]));
  double sum = 0;
  for (int64_t e = 0; e < n; ++e) sum += std::exp(static_cast<double>(z[e]) - m);
  return m + std::log(sum);
}

}  // namespace

Tensor tokens_per_expert_histogram(const Tensor& expert_ids, int64_t num_experts) {
  return histogram(expert_ids, num_experts, 1, "tokens_per_expert_histogram")
      .reshape({num_experts});
}

Tensor tokens_per_expert_per_sequence(const Tensor& expert_ids, int64_t num_experts,
                                      int64_t num_sequences) {
  return histogram(expert_ids, num_experts, num_sequences, "tokens_per_expert_per_sequence");
}

Tensor aux_loss_scores(const Tensor& logits, ScoreFunction score_function) {
  constexpr const char* op = "aux_loss_scores";
  detail::check_router_logits(logits, op);
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  Tensor scores = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  if (logits.is_cuda()) {
    MOE_CUDA_ONLY(detail::aux_loss_scores_cuda(logits, kind_of(score_function), scores);
                  return scores;)
  }
  dispatch<DType::f64, DType::f32>(logits.dtype(), op, [&]<class T>() {
    const T* z_all = logits.data<T>();
    T* s_all = scores.data<T>();
    std::vector<double> v(num_experts);
    for (int64_t t = 0; t < num_tokens; ++t) {
      const T* z = z_all + t * num_experts;
      double m = 0, sum = 0;
      if (score_function == ScoreFunction::softmax) {
        m = -std::numeric_limits<double>::infinity();
        for (int64_t e = 0; e < num_experts; ++e) m = std::max(m, static_cast<double>(z[e]));
      }
      for (int64_t e = 0; e < num_experts; ++e) {
        v[e] = score_function == ScoreFunction::softmax
                   ? std::exp(static_cast<double>(z[e]) - m)
                   : detail::sigmoid_f64(static_cast<double>(z[e]));
        sum += v[e];
      }
      for (int64_t e = 0; e < num_experts; ++e)
        s_all[t * num_experts + e] = static_cast<T>(v[e] / sum);
    }
  });
  return scores;
}

Tensor aux_loss_forward(const Tensor& scores, const Tensor& counts, int64_t total_tokens,
                        int64_t topk, double coeff) {
  constexpr const char* op = "aux_loss_forward";
  check_scores_counts(scores, counts, 1, op);
  check_aux_counts(scores, counts, op);
  const double scale = aux_scale(scores, total_tokens, topk, coeff, op);
  return weighted_score_sum(scores, counts.reshape({1, scores.size(1)}), 1, scale);
}

void aux_loss_backward(double grad_loss, const Tensor& scores, const Tensor& counts,
                       int64_t total_tokens, int64_t topk, double coeff, const Tensor& logits,
                       ScoreFunction score_function, Tensor& d_logits) {
  constexpr const char* op = "aux_loss_backward";
  check_scores_counts(scores, counts, 1, op);
  check_aux_counts(scores, counts, op);
  const double scale = grad_loss * aux_scale(scores, total_tokens, topk, coeff, op);
  weighted_score_sum_backward(scale, scores, counts.reshape({1, scores.size(1)}), 1, logits,
                              score_function, d_logits, op);
}

Tensor seq_aux_loss_forward(const Tensor& scores, const Tensor& counts, int64_t num_sequences,
                            int64_t total_seq_len, int64_t topk, double coeff) {
  constexpr const char* op = "seq_aux_loss_forward";
  check_scores_counts(scores, counts, num_sequences, op);
  check_seq_counts(scores, counts, num_sequences, op);
  const double scale =
      aux_scale(scores, total_seq_len, topk, coeff, op) / static_cast<double>(num_sequences);
  return weighted_score_sum(scores, counts, num_sequences, scale);
}

void seq_aux_loss_backward(double grad_loss, const Tensor& scores, const Tensor& counts,
                           int64_t num_sequences, int64_t total_seq_len, int64_t topk, double coeff,
                           const Tensor& logits, ScoreFunction score_function, Tensor& d_logits) {
  constexpr const char* op = "seq_aux_loss_backward";
  check_scores_counts(scores, counts, num_sequences, op);
  check_seq_counts(scores, counts, num_sequences, op);
  const double scale = grad_loss * aux_scale(scores, total_seq_len, topk, coeff, op) /
                       static_cast<double>(num_sequences);
  weighted_score_sum_backward(scale, scores, counts, num_sequences, logits, score_function,
                              d_logits, op);
}

Tensor z_loss_forward(const Tensor& logits, double coeff) {
  constexpr const char* op = "z_loss_forward";
  detail::check_router_logits(logits, op);
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  const double scale = num_tokens > 0 ? coeff / static_cast<double>(num_tokens) : 0.0;
  Tensor loss = Tensor::empty({}, logits.dtype(), logits.device());
  if (logits.is_cuda()) {
    MOE_CUDA_ONLY(detail::z_loss_cuda(logits, scale, loss); return loss;)
  }
  dispatch<DType::f64, DType::f32>(logits.dtype(), op, [&]<class T>() {
    double total = 0;
    for (int64_t t = 0; t < num_tokens; ++t) {
      const double lse = logsumexp_row(logits.data<T>() + t * num_experts, num_experts);
      total += lse * lse;
    }
    loss.data<T>()[0] = static_cast<T>(scale * total);
  });
  return loss;
}

void z_loss_backward(double grad_loss, const Tensor& logits, double coeff, Tensor& d_logits) {
  constexpr const char* op = "z_loss_backward";
  detail::check_router_logits(logits, op);
  check_defined(d_logits, op, "d_logits");
  check_shape(d_logits, logits.shape(), op, "d_logits");
  check_dtype(d_logits, logits.dtype(), op, "d_logits");
  check_same_device(d_logits, logits, op);
  const int64_t num_tokens = logits.size(0), num_experts = logits.size(1);
  if (num_tokens == 0) return;
  // d z_te = grad_loss * coeff / T * 2 lse_t softmax(z_t)_e
  const double scale = grad_loss * coeff / static_cast<double>(num_tokens);
  if (logits.is_cuda()) {
    MOE_CUDA_ONLY(detail::z_loss_backward_cuda(scale, logits, d_logits); return;)
  }
  dispatch<DType::f64, DType::f32>(logits.dtype(), op, [&]<class T>() {
    for (int64_t t = 0; t < num_tokens; ++t) {
      const T* z = logits.data<T>() + t * num_experts;
      T* d = d_logits.data<T>() + t * num_experts;
      const double lse = logsumexp_row(z, num_experts);
      for (int64_t e = 0; e < num_experts; ++e)
        d[e] = static_cast<T>(static_cast<double>(d[e]) +
                              scale * 2 * lse * std::exp(static_cast<double>(z[e]) - lse));
    }
  });
}

}  // namespace moe::ops
