// Test inputs for the permutation ops (CPU and CUDA tests): random top-k routings with experts
// that receive no tokens and dropped slots, and probs with many exact ties.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "common/check.h"
#include "moe/core/tensor.h"

namespace moe::test {

struct RoutingSpec {
  int64_t tokens = 0;
  int64_t topk = 1;
  int64_t experts = 1;
  bool holes = false;  // every third expert (1, 4, 7, ...) receives no tokens
  double drop = 0.0;   // fraction of slots set to -1 (already dropped)
};

// expert_ids [T, K] i32: K distinct experts per token (in random order), from the experts the
// spec allows.
inline Tensor random_routing(const RoutingSpec& spec, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<int32_t> allowed;
  for (int32_t e = 0; e < spec.experts; ++e)
    if (!spec.holes || e % 3 != 1) allowed.push_back(e);
  MOE_CHECK(static_cast<int64_t>(allowed.size()) >= spec.topk, "random_routing: ", allowed.size(),
            " usable experts for topk ", spec.topk);
  std::vector<int32_t> ids(static_cast<size_t>(spec.tokens * spec.topk));
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<int32_t> pool = allowed;
  for (int64_t t = 0; t < spec.tokens; ++t) {
    // Partial Fisher-Yates: the first K entries become K distinct experts.
    for (int64_t j = 0; j < spec.topk; ++j) {
      std::uniform_int_distribution<size_t> pick(static_cast<size_t>(j), pool.size() - 1);
      std::swap(pool[static_cast<size_t>(j)], pool[pick(gen)]);
      const bool dropped = unit(gen) < spec.drop;
      ids[static_cast<size_t>(t * spec.topk + j)] = dropped ? -1 : pool[static_cast<size_t>(j)];
    }
  }
  return Tensor::from_vector(ids, {spec.tokens, spec.topk});
}

// probs [T, K] f32 in {0.125, 0.25, ..., 1}: few distinct values, so capacity ties are common.
inline Tensor tied_probs(int64_t tokens, int64_t topk, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int> level(1, 8);
  std::vector<float> p(static_cast<size_t>(tokens * topk));
  for (float& v : p) v = static_cast<float>(level(gen)) / 8.0f;
  return Tensor::from_vector(p, {tokens, topk});
}

// x rounded through dtype and back (the same values a bf16 kernel sees, in f32).
inline Tensor rounded_through(const Tensor& x, DType dtype) {
  return x.to(dtype).to(DType::f32);
}

}  // namespace moe::test
