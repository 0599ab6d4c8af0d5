// Helpers shared by the router tests: inputs whose top-k is stable under finite-difference
// perturbations, and a brute-force reference of the (group-limited) selection.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "common/check.h"
#include "moe/core/tensor.h"
#include "moe/ops/router.h"

namespace moe::test {

inline ops::TopKConfig make_config(int64_t topk, ops::ScoreFunction f, bool pre_softmax = false,
                                   int64_t num_groups = 0, int64_t group_topk = 0,
                                   double scaling_factor = 1.0) {
  ops::TopKConfig c;
  c.topk = topk;
  c.score_function = f;
  c.pre_softmax = pre_softmax;
  c.num_groups = num_groups;
  c.group_topk = group_topk;
  c.scaling_factor = scaling_factor;
  return c;
}

// [T, E] f64 logits: each row a random permutation of a 0.37-spaced ladder centred on 0, plus
// noise in [0, 0.05): any two logits of a row differ by > 0.3, far more than the 1e-6 steps
// of the finite differences, and sums of them (group scores) tie with probability 0.
inline Tensor separated_logits(int64_t tokens, int64_t experts, uint64_t seed,
                               DType dtype = DType::f64) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> noise(0.0, 0.05);
  std::vector<double> values(static_cast<size_t>(tokens * experts));
  std::vector<int64_t> perm(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), gen);
    for (int64_t e = 0; e < experts; ++e)
      values[t * experts + e] =
          0.37 * (static_cast<double>(perm[e]) - 0.5 * static_cast<double>(experts)) + noise(gen);
  }
  return Tensor::from_vector(values, {tokens, experts}).to(dtype);
}

// Brute-force top-k of one row of selection values under the documented order (higher first,
// equal values by lower index), restricted to `allowed` experts (empty: all).
inline std::vector<int64_t> reference_topk(const std::vector<double>& values, int64_t k,
                                           const std::vector<bool>& allowed = {}) {
  std::vector<int64_t> idx;
  for (int64_t e = 0; e < static_cast<int64_t>(values.size()); ++e)
    if (allowed.empty() || allowed[e]) idx.push_back(e);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return values[a] > values[b]; });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

// The experts in the groups that group-limited routing keeps for one row of selection values.
inline std::vector<bool> reference_kept_experts(const std::vector<double>& values,
                                                int64_t num_groups, int64_t group_topk,
                                                int64_t topk, int64_t score_size = 0) {
  // A group's score: the sum of its best score_size values (0: topk / group_topk).
  if (score_size == 0) score_size = topk / group_topk;
  const int64_t experts = static_cast<int64_t>(values.size()), size = experts / num_groups;
  std::vector<double> group_score(num_groups);
  for (int64_t g = 0; g < num_groups; ++g) {
    std::vector<double> members(values.begin() + g * size, values.begin() + (g + 1) * size);
    std::sort(members.begin(), members.end(), std::greater<double>());
    double sum = 0;
    for (int64_t i = 0; i < score_size; ++i) sum += members[i];
    group_score[g] = sum;
  }
  const std::vector<int64_t> groups = reference_topk(group_score, group_topk);
  std::vector<bool> kept(experts, false);
  for (int64_t g : groups)
    for (int64_t e = 0; e < size; ++e) kept[g * size + e] = true;
  return kept;
}

inline std::vector<double> row(const Tensor& t, int64_t r) {
  const std::vector<double> all = t.to_double_vector();
  const int64_t cols = t.size(1);
  return std::vector<double>(all.begin() + r * cols, all.begin() + (r + 1) * cols);
}

}  // namespace moe::test
