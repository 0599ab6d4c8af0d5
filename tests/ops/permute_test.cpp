// Token permutation on the CPU, as a specification: the map's layout (stable by expert, padding
// to multiples and to capacity), fp64 finite-difference gradients of permute / unpermute, the
// Megatron-equivalent round trips, capacity dropping, chunk sorting, empty inputs and errors.
#include "moe/ops/permute.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <vector>

#include "common/check.h"
#include "ops/permute_testing.h"

namespace moe::ops {
namespace {

using test::RoutingSpec;

std::vector<int32_t> ints(const Tensor& t) {
  return t.to_vector<int32_t>();
}
std::vector<int64_t> longs(const Tensor& t) {
  return t.to_vector<int64_t>();
}

Tensor ids_of(const std::vector<int32_t>& v, int64_t tokens, int64_t topk) {
  return Tensor::from_vector(v, {tokens, topk});
}

// The worked example: 4 tokens, top-2 of 3 experts, slot 5 dropped.
//   slot:   0  1  2  3  4  5  6  7
//   expert: 0  2  1  0  2 -1  0  1
Tensor example_ids() {
  return ids_of({0, 2, 1, 0, 2, -1, 0, 1}, 4, 2);
}

// Checks everything a map promises, whatever its config: the two directions are inverse,
// every expert's rows are its slots in ascending order followed by padding, and rows past
// sum(tokens_per_expert) are padding.
void expect_consistent(const PermuteMap& map, const Tensor& expert_ids, int64_t experts) {
  const auto ids = ints(expert_ids);
  const auto s2r = ints(map.slot_to_row), r2s = ints(map.row_to_slot);
  const auto tpe = longs(map.tokens_per_expert);
  ASSERT_EQ(static_cast<int64_t>(s2r.size()), map.num_tokens * map.topk);
  ASSERT_EQ(static_cast<int64_t>(r2s.size()), map.num_rows);
  int64_t start = 0;
  for (int64_t e = 0; e < experts; ++e) {
    int64_t last_slot = -1;
    bool in_padding = false;
    for (int64_t r = start; r < start + tpe[e]; ++r) {
      ASSERT_LT(r, map.num_rows);
      const int32_t s = r2s[r];
      if (s < 0) {
        in_padding = true;
        continue;
      }
      EXPECT_FALSE(in_padding) << "expert " << e << ": a kept row after padding at row " << r;
      EXPECT_EQ(ids[s], e) << "row " << r;
      EXPECT_GT(s, last_slot) << "expert " << e << " is not in ascending slot order";
      EXPECT_EQ(s2r[s], r);
      last_slot = s;
    }
    start += tpe[e];
  }
  for (int64_t r = start; r < map.num_rows; ++r) EXPECT_EQ(r2s[r], -1) << "row " << r;
  for (size_t s = 0; s < s2r.size(); ++s) {
    if (s2r[s] >= 0) {
      EXPECT_EQ(r2s[s2r[s]], static_cast<int32_t>(s));
    }
    if (ids[s] < 0) {
      EXPECT_EQ(s2r[s], -1) << "dropped slot " << s << " got a row";
    }
  }
}

// ---- the map --------------------------------------------------------------------------------

TEST(PermuteMap, KnownAnswer) {
  const PermuteMap map = make_permute_map(example_ids(), {.num_experts = 3});
  EXPECT_EQ(map.num_tokens, 4);
  EXPECT_EQ(map.topk, 2);
  EXPECT_EQ(map.num_rows, 8);
  EXPECT_EQ(ints(map.slot_to_row), (std::vector<int32_t>{0, 5, 3, 1, 6, -1, 2, 4}));
  EXPECT_EQ(ints(map.row_to_slot), (std::vector<int32_t>{0, 3, 6, 2, 7, 1, 4, -1}));
  EXPECT_EQ(longs(map.tokens_per_expert), (std::vector<int64_t>{3, 2, 2}));
}

TEST(PermuteMap, PadToMultiple) {
  const PermuteMap map = make_permute_map(example_ids(), {.num_experts = 3, .pad_multiple = 4});
  EXPECT_EQ(map.num_rows, 8 + 3 * 3);  // T*K + min(E, T*K) * (multiple - 1)
  EXPECT_EQ(longs(map.tokens_per_expert), (std::vector<int64_t>{4, 4, 4}));
  EXPECT_EQ(ints(map.slot_to_row), (std::vector<int32_t>{0, 8, 4, 1, 9, -1, 2, 5}));
  std::vector<int32_t> rows(17, -1);
  for (auto [r, s] :
       std::vector<std::pair<int, int>>{{0, 0}, {1, 3}, {2, 6}, {4, 2}, {5, 7}, {8, 1}, {9, 4}})
    rows[r] = s;
  EXPECT_EQ(ints(map.row_to_slot), rows);
}

TEST(PermuteMap, PadToCapacityDropsOverflowByPosition) {
  // Expert 0 has slots 0, 3, 6: with capacity 2 slot 6 is dropped.
  PermuteMap map =
      make_permute_map(example_ids(), {.num_experts = 3, .capacity = 2, .pad_to_capacity = true});
  EXPECT_EQ(map.num_rows, 6);
  EXPECT_EQ(longs(map.tokens_per_expert), (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(ints(map.slot_to_row), (std::vector<int32_t>{0, 4, 2, 1, 5, -1, -1, 3}));
  EXPECT_EQ(ints(map.row_to_slot), (std::vector<int32_t>{0, 3, 2, 7, 1, 4}));
  // Capacity rows rounded up to the multiple: 4 rows per expert, 2 of them kept at most.
  map = make_permute_map(
      example_ids(), {.num_experts = 3, .pad_multiple = 4, .capacity = 2, .pad_to_capacity = true});
  EXPECT_EQ(map.num_rows, 12);
  EXPECT_EQ(longs(map.tokens_per_expert), (std::vector<int64_t>{4, 4, 4}));
  EXPECT_EQ(ints(map.slot_to_row), (std::vector<int32_t>{0, 8, 4, 1, 9, -1, -1, 5}));
}

TEST(PermuteMap, RandomRoutingsAreConsistent) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t topk : {1, 2, 8}) {
    for (int64_t experts : {12, 33}) {
      const RoutingSpec spec{
          .tokens = 57, .topk = topk, .experts = experts, .holes = true, .drop = 0.1};
      const Tensor ids = test::random_routing(spec, seed + topk * 100 + experts);
      for (PermuteConfig config :
           {PermuteConfig{.num_experts = experts},
            PermuteConfig{.num_experts = experts, .pad_multiple = 16},
            PermuteConfig{.num_experts = experts, .capacity = 5, .pad_to_capacity = true}}) {
        SCOPED_TRACE(testing::Message() << "K=" << topk << " E=" << experts << " pad "
                                        << config.pad_multiple << " cap " << config.capacity);
        const PermuteMap map = make_permute_map(ids, config);
        expect_consistent(map, ids, experts);
        const auto tpe = longs(map.tokens_per_expert);
        for (int64_t e = 0; e < experts; ++e) {
          if (e % 3 == 1 && !config.pad_to_capacity) {
            EXPECT_EQ(tpe[e], 0) << "expert " << e << " receives no tokens";
          }
          EXPECT_EQ(tpe[e] % config.pad_multiple, 0);
        }
      }
    }
  }
}

TEST(PermuteMap, EmptyExperts) {
  // 8 experts, only 1 and 5 used.
  const Tensor ids = ids_of({5, 1, 1, 5, 5, 1}, 3, 2);
  const PermuteMap map = make_permute_map(ids, {.num_experts = 8});
  EXPECT_EQ(longs(map.tokens_per_expert), (std::vector<int64_t>{0, 3, 0, 0, 0, 3, 0, 0}));
  EXPECT_EQ(ints(map.row_to_slot), (std::vector<int32_t>{1, 2, 5, 0, 3, 4}));
  expect_consistent(map, ids, 8);
}

// ---- gradients (fp64 finite differences) ----------------------------------------------------

struct GradCase {
  const char* name;
  PermuteConfig config;
};

std::vector<GradCase> grad_cases(int64_t experts) {
  return {{"plain", {.num_experts = experts}},
          {"pad4", {.num_experts = experts, .pad_multiple = 4}},
          {"capacity", {.num_experts = experts, .capacity = 2, .pad_to_capacity = true}}};
}

TEST(PermuteGrad, PermuteMatchesFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 7, topk = 3, experts = 5, hidden = 4;
  const Tensor ids =
      test::random_routing({.tokens = tokens, .topk = topk, .experts = experts, .drop = 0.2}, seed);
  for (const GradCase& c : grad_cases(experts)) {
    SCOPED_TRACE(c.name);
    const PermuteMap map = make_permute_map(ids, c.config);
    Tensor x = test::random_normal({tokens, hidden}, DType::f64, seed + 1);
    Tensor probs = test::random_uniform({tokens, topk}, DType::f64, seed + 2, 0.1, 1.0);
    const Tensor wx = test::random_normal({map.num_rows, hidden}, DType::f64, seed + 3);
    const Tensor wp = test::random_normal({map.num_rows}, DType::f64, seed + 4);
    auto loss = [&] {
      const Permuted p = permute_forward(x, probs, map);
      return test::dot(p.x, wx) + test::dot(p.probs, wp);
    };
    const PermuteGrads grads = permute_backward(wx, wp, map);
    EXPECT_TRUE(test::close(grads.x, test::numerical_gradient(loss, x), test::kGradCheckTol, "dx"));
    EXPECT_TRUE(test::close(grads.probs, test::numerical_gradient(loss, probs), test::kGradCheckTol,
                            "dprobs"));
    // Without probs the probs gradient is undefined and dx is unchanged.
    const PermuteGrads no_probs = permute_backward(wx, Tensor(), map);
    EXPECT_FALSE(no_probs.probs.defined());
    EXPECT_TRUE(test::equal(no_probs.x, grads.x));
  }
}

TEST(PermuteGrad, UnpermuteMatchesFiniteDifferences) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 6, topk = 2, experts = 4, hidden = 5;
  const Tensor ids = test::random_routing(
      {.tokens = tokens, .topk = topk, .experts = experts, .drop = 0.25}, seed);
  for (const GradCase& c : grad_cases(experts)) {
    SCOPED_TRACE(c.name);
    const PermuteMap map = make_permute_map(ids, c.config);
    Tensor y_perm = test::random_normal({map.num_rows, hidden}, DType::f64, seed + 1);
    const Tensor w = test::random_normal({tokens, hidden}, DType::f64, seed + 2);
    auto loss = [&] { return test::dot(unpermute_forward(y_perm, map), w); };
    EXPECT_TRUE(test::close(unpermute_backward(w, map), test::numerical_gradient(loss, y_perm),
                            test::kGradCheckTol, "d_y_perm"));
  }
}

// ---- Megatron-equivalent round trips --------------------------------------------------------

// kept[t] = slots of token t with a row.
std::vector<int64_t> kept_per_token(const PermuteMap& map) {
  const auto s2r = ints(map.slot_to_row);
  std::vector<int64_t> kept(static_cast<size_t>(map.num_tokens), 0);
  for (int64_t s = 0; s < map.num_tokens * map.topk; ++s)
    if (s2r[s] >= 0) ++kept[s / map.topk];
  return kept;
}

Tensor scale_rows(const Tensor& x, const std::vector<int64_t>& factor) {
  Tensor out = x.to(DType::f64);
  double* p = out.data<double>();
  const int64_t cols = x.size(1);
  for (int64_t r = 0; r < x.size(0); ++r)
    for (int64_t c = 0; c < cols; ++c) p[r * cols + c] *= static_cast<double>(factor[r]);
  return out.to(x.dtype());
}

TEST(PermuteRoundTrip, ReturnsXTimesKeptSlots) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (int64_t topk : {1, 2, 4}) {
    for (double drop : {0.0, 0.3}) {
      SCOPED_TRACE(testing::Message() << "K=" << topk << " drop=" << drop);
      const int64_t tokens = 37, experts = 6, hidden = 9;
      const Tensor ids = test::random_routing(
          {.tokens = tokens, .topk = topk, .experts = experts, .drop = drop}, seed + topk);
      const PermuteMap map = make_permute_map(ids, {.num_experts = experts, .pad_multiple = 4});
      const Tensor x = test::random_normal({tokens, hidden}, DType::f32, seed);
      const Tensor y = unpermute_forward(permute_forward(x, Tensor(), map).x, map);
      const auto kept = kept_per_token(map);
      if (topk == 1 && drop == 0.0) {
        EXPECT_TRUE(test::equal(y, x)) << "K = 1 without drops returns x exactly";
      }
      EXPECT_TRUE(test::close_as(y, scale_rows(x, kept), DType::f32, "round trip"));
      // Its gradient: the same factor on dy.
      const Tensor dy = test::random_normal({tokens, hidden}, DType::f32, seed + 7);
      const PermuteGrads g = permute_backward(unpermute_backward(dy, map), Tensor(), map);
      EXPECT_TRUE(test::close_as(g.x, scale_rows(dy, kept), DType::f32, "round-trip gradient"));
    }
  }
}

// probs_perm applied to the permuted rows (as the SwiGLU does): y_perm[r] = probs_perm[r]
// x_perm[r].
Tensor apply_row_probs(const Tensor& x_perm, const Tensor& probs_perm) {
  Tensor out = x_perm.to(DType::f64);
  const auto p = probs_perm.to_double_vector();
  double* d = out.data<double>();
  const int64_t cols = out.size(1);
  for (int64_t r = 0; r < out.size(0); ++r)
    for (int64_t c = 0; c < cols; ++c) d[r * cols + c] *= p[r];
  return out;
}

TEST(PermuteRoundTrip, WithProbsGivesProbWeightedSum) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 41, topk = 3, experts = 7, hidden = 6;
  const Tensor ids = test::random_routing(
      {.tokens = tokens, .topk = topk, .experts = experts, .holes = true, .drop = 0.2}, seed);
  const PermuteMap map = make_permute_map(ids, {.num_experts = experts});
  const Tensor x = test::random_normal({tokens, hidden}, DType::f64, seed + 1);
  const Tensor probs = test::random_uniform({tokens, topk}, DType::f64, seed + 2, 0.0, 1.0);
  const Permuted p = permute_forward(x, probs, map);
  const Tensor y = unpermute_forward(apply_row_probs(p.x, p.probs), map);
  // Expected: sum over kept slots of p_k x[t].
  const auto s2r = ints(map.slot_to_row);
  const auto pv = probs.to_vector<double>(), xv = x.to_vector<double>();
  std::vector<double> expected(static_cast<size_t>(tokens * hidden), 0.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < topk; ++j)
      if (s2r[t * topk + j] >= 0)
        for (int64_t c = 0; c < hidden; ++c)
          expected[t * hidden + c] += pv[t * topk + j] * xv[t * hidden + c];
  EXPECT_TRUE(test::close_as(y, Tensor::from_vector(expected, {tokens, hidden}), DType::f64));
}

TEST(PermuteRoundTrip, PaddingToMultiplesOf16LeavesOutputsUnchanged) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 53, topk = 2, experts = 9, hidden = 5;
  const Tensor ids = test::random_routing(
      {.tokens = tokens, .topk = topk, .experts = experts, .holes = true}, seed);
  const PermuteMap plain = make_permute_map(ids, {.num_experts = experts});
  const PermuteMap padded = make_permute_map(ids, {.num_experts = experts, .pad_multiple = 16});
  const Tensor x = test::random_normal({tokens, hidden}, DType::f32, seed + 1);
  const Tensor probs = test::random_uniform({tokens, topk}, DType::f32, seed + 2, 0.0, 1.0);
  const Permuted a = permute_forward(x, probs, plain);
  const Permuted b = permute_forward(x, probs, padded);
  // Same rows per expert, padding rows zero with prob 0.
  const auto n1 = longs(plain.tokens_per_expert), n16 = longs(padded.tokens_per_expert);
  const auto r2s = ints(padded.row_to_slot);
  const auto pb = b.probs.to_vector<float>();
  int64_t s1 = 0, s16 = 0;
  for (int64_t e = 0; e < experts; ++e) {
    EXPECT_EQ(n16[e] % 16, 0);
    EXPECT_GE(n16[e], n1[e]);
    EXPECT_LT(n16[e] - n1[e], 16);
    EXPECT_TRUE(test::equal(b.x.rows(s16, n1[e]), a.x.rows(s1, n1[e])));
    EXPECT_TRUE(test::equal(b.x.rows(s16 + n1[e], n16[e] - n1[e]),
                            Tensor::zeros({n16[e] - n1[e], hidden}, DType::f32)));
    for (int64_t r = s16 + n1[e]; r < s16 + n16[e]; ++r) {
      EXPECT_EQ(r2s[r], -1);
      EXPECT_EQ(pb[r], 0.0f);
    }
    s1 += n1[e];
    s16 += n16[e];
  }
  EXPECT_TRUE(test::equal(unpermute_forward(apply_row_probs(b.x, b.probs), padded),
                          unpermute_forward(apply_row_probs(a.x, a.probs), plain)));
}

// ---- capacity -------------------------------------------------------------------------------

TEST(PermuteCapacity, ExpertCapacityFormula) {
  EXPECT_EQ(expert_capacity(10, 2, 4, 1.0), 5);  // ceil(20 / 4)
  EXPECT_EQ(expert_capacity(10, 2, 4, 1.5), 8);  // ceil(7.5)
  EXPECT_EQ(expert_capacity(7, 1, 3, 1.0), 3);   // ceil(2.33)
  EXPECT_EQ(expert_capacity(4096, 8, 128, 1.0), 256);
  EXPECT_EQ(expert_capacity(0, 2, 4, 1.0), 0);
  EXPECT_THROW(expert_capacity(10, 2, 0, 1.0), moe::Error);
  EXPECT_THROW(expert_capacity(10, 2, 4, 0.0), moe::Error);
}

TEST(PermuteCapacity, KnownAnswerWithTies) {
  // Expert 0 at slots 0, 2, 4, 6 with probs 0.5, 0.9, 0.5, 0.5; expert 1 at 1, 3, 5, 7.
  const Tensor ids = ids_of({0, 1, 0, 1, 0, 1, 0, 1}, 4, 2);
  const Tensor probs = Tensor::from_vector(
      std::vector<float>{0.5f, 0.1f, 0.9f, 0.2f, 0.5f, 0.3f, 0.5f, 0.4f}, {4, 2});
  // probs, capacity 2: expert 0 keeps slot 2 (0.9) and slot 0 (0.5, the lowest slot among
  // the ties); expert 1 keeps 0.4 and 0.3 (slots 7, 5).
  EXPECT_EQ(ints(drop_over_capacity(ids, probs, 2, 2, DropPolicy::probs)),
            (std::vector<int32_t>{0, -1, 0, -1, -1, 1, -1, 1}));
  // position: the first two slots of each expert.
  EXPECT_EQ(ints(drop_over_capacity(ids, probs, 2, 2, DropPolicy::position)),
            (std::vector<int32_t>{0, 1, 0, 1, -1, -1, -1, -1}));
  EXPECT_EQ(ints(drop_over_capacity(ids, Tensor(), 2, 0, DropPolicy::position)),
            std::vector<int32_t>(8, -1));
}

TEST(PermuteCapacity, PoliciesKeepTheRightSlots) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 97, topk = 2, experts = 8;
  const Tensor ids = test::random_routing(
      {.tokens = tokens, .topk = topk, .experts = experts, .holes = true, .drop = 0.05}, seed);
  const Tensor probs = test::tied_probs(tokens, topk, seed + 1);
  const int64_t capacity = expert_capacity(tokens, topk, experts, 1.0);
  const auto in = ints(ids);
  const auto p = probs.to_vector<float>();
  std::map<int32_t, std::vector<int64_t>> slots;  // expert -> slots in order
  for (int64_t s = 0; s < tokens * topk; ++s)
    if (in[s] >= 0) slots[in[s]].push_back(s);
  for (DropPolicy policy : {DropPolicy::probs, DropPolicy::position}) {
    SCOPED_TRACE(policy == DropPolicy::probs ? "probs" : "position");
    const auto out = ints(drop_over_capacity(ids, probs, experts, capacity, policy));
    for (auto& [e, list] : slots) {
      int64_t kept = 0;
      for (int64_t s : list) {
        EXPECT_TRUE(out[s] == e || out[s] == -1);
        kept += out[s] == e;
      }
      EXPECT_EQ(kept, std::min<int64_t>(capacity, static_cast<int64_t>(list.size())))
          << "expert " << e;
      for (size_t a = 0; a < list.size(); ++a) {
        for (size_t b = 0; b < list.size(); ++b) {
          const int64_t k = list[a], d = list[b];
          if (out[k] != e || out[d] != -1) continue;  // k kept, d dropped
          if (policy == DropPolicy::position) {
            EXPECT_LT(k, d) << "position keeps the earliest slots";
          } else {
            EXPECT_TRUE(p[k] > p[d] || (p[k] == p[d] && k < d))
                << "kept slot " << k << " (p " << p[k] << ") over slot " << d << " (p " << p[d]
                << ")";
          }
        }
      }
    }
    for (int64_t s = 0; s < tokens * topk; ++s) {
      if (in[s] < 0) {
        EXPECT_EQ(out[s], -1);
      }
    }
  }
}

TEST(PermuteCapacity, DropAndPadKeepsTheSameSlotsAsDrop) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 61, topk = 2, experts = 6, hidden = 7;
  const Tensor ids = test::random_routing(
      {.tokens = tokens, .topk = topk, .experts = experts, .holes = true}, seed);
  const Tensor probs = test::tied_probs(tokens, topk, seed + 1);
  const int64_t capacity = expert_capacity(tokens, topk, experts, 1.2);
  const Tensor x = test::random_normal({tokens, hidden}, DType::f64, seed + 2);
  for (DropPolicy policy : {DropPolicy::probs, DropPolicy::position}) {
    const Tensor dropped = drop_over_capacity(ids, probs, experts, capacity, policy);
    const PermuteMap drop = make_permute_map(dropped, {.num_experts = experts});
    const PermuteMap pad = make_permute_map(
        dropped, {.num_experts = experts, .capacity = capacity, .pad_to_capacity = true});
    expect_consistent(pad, dropped, experts);
    EXPECT_EQ(pad.num_rows, experts * capacity);
    EXPECT_EQ(longs(pad.tokens_per_expert), std::vector<int64_t>(experts, capacity));
    const auto a = ints(drop.slot_to_row), b = ints(pad.slot_to_row);
    for (size_t s = 0; s < a.size(); ++s) EXPECT_EQ(a[s] >= 0, b[s] >= 0) << "slot " << s;
    // Padding rows are zero with prob 0; the combined output is the same.
    const Tensor probs64 = probs.to(DType::f64);
    const Permuted pd = permute_forward(x, probs64, drop), pp = permute_forward(x, probs64, pad);
    const auto r2s = ints(pad.row_to_slot);
    const auto xp = pp.x.to_vector<double>(), pr = pp.probs.to_vector<double>();
    for (int64_t r = 0; r < pad.num_rows; ++r) {
      if (r2s[r] >= 0) continue;
      EXPECT_EQ(pr[r], 0.0);
      for (int64_t c = 0; c < hidden; ++c) EXPECT_EQ(xp[r * hidden + c], 0.0);
    }
    EXPECT_TRUE(test::close_as(unpermute_forward(apply_row_probs(pp.x, pp.probs), pad),
                               unpermute_forward(apply_row_probs(pd.x, pd.probs), drop),
                               DType::f64));
  }
  // Padding to capacity without dropping first drops the overflow by position.
  const PermuteMap direct = make_permute_map(
      ids, {.num_experts = experts, .capacity = capacity, .pad_to_capacity = true});
  const PermuteMap via_drop =
      make_permute_map(drop_over_capacity(ids, Tensor(), experts, capacity, DropPolicy::position),
                       {.num_experts = experts, .capacity = capacity, .pad_to_capacity = true});
  EXPECT_TRUE(test::equal(direct.slot_to_row, via_drop.slot_to_row));
  EXPECT_TRUE(test::equal(direct.row_to_slot, via_drop.row_to_slot));
}

// ---- empty inputs ---------------------------------------------------------------------------

TEST(PermuteEmpty, ZeroTokens) {
  const Tensor ids = Tensor::empty({0, 2}, DType::i32);
  const PermuteMap map = make_permute_map(ids, {.num_experts = 4});
  EXPECT_EQ(map.num_rows, 0);
  EXPECT_EQ(longs(map.tokens_per_expert), std::vector<int64_t>(4, 0));
  const Tensor x = Tensor::empty({0, 5}, DType::f32);
  const Tensor probs = Tensor::empty({0, 2}, DType::f32);
  const Permuted p = permute_forward(x, probs, map);
  EXPECT_EQ(p.x.shape(), (Shape{0, 5}));
  EXPECT_EQ(p.probs.shape(), (Shape{0}));
  EXPECT_EQ(unpermute_forward(p.x, map).shape(), (Shape{0, 5}));
  EXPECT_EQ(unpermute_backward(x, map).shape(), (Shape{0, 5}));
  const PermuteGrads g = permute_backward(p.x, p.probs, map);
  EXPECT_EQ(g.x.shape(), (Shape{0, 5}));
  EXPECT_EQ(g.probs.shape(), (Shape{0, 2}));
  EXPECT_EQ(drop_over_capacity(ids, probs, 4, 3, DropPolicy::probs).shape(), (Shape{0, 2}));
  // Drop-and-pad with no tokens: every expert still gets its capacity of padding rows.
  const PermuteMap pad =
      make_permute_map(ids, {.num_experts = 4, .capacity = 3, .pad_to_capacity = true});
  EXPECT_EQ(pad.num_rows, 12);
  const Permuted pp = permute_forward(x, probs, pad);
  EXPECT_TRUE(test::equal(pp.x, Tensor::zeros({12, 5}, DType::f32)));
  EXPECT_TRUE(test::equal(pp.probs, Tensor::zeros({12}, DType::f32)));
  EXPECT_EQ(unpermute_forward(pp.x, pad).shape(), (Shape{0, 5}));
}

TEST(PermuteEmpty, AllSlotsDroppedGivesZeros) {
  const Tensor ids = ids_of({-1, -1, -1, -1}, 2, 2);
  const PermuteMap map = make_permute_map(ids, {.num_experts = 3});
  EXPECT_EQ(longs(map.tokens_per_expert), std::vector<int64_t>(3, 0));
  const Tensor x = test::random_normal({2, 3}, DType::f32, 1);
  const Permuted p = permute_forward(x, Tensor(), map);
  EXPECT_TRUE(test::equal(p.x, Tensor::zeros({4, 3}, DType::f32)));
  EXPECT_TRUE(test::equal(unpermute_forward(test::random_normal({4, 3}, DType::f32, 2), map),
                          Tensor::zeros({2, 3}, DType::f32)));
}

// ---- dtypes ---------------------------------------------------------------------------------

TEST(PermuteDtypes, Bf16SumsInFp32) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 29, topk = 4, experts = 5, hidden = 16;
  const Tensor ids =
      test::random_routing({.tokens = tokens, .topk = topk, .experts = experts, .drop = 0.1}, seed);
  const PermuteMap map = make_permute_map(ids, {.num_experts = experts});
  const Tensor y16 = test::random_normal({map.num_rows, hidden}, DType::bf16, seed + 1);
  const Tensor ref = unpermute_forward(y16.to(DType::f32), map);
  const Tensor y = unpermute_forward(y16, map);
  EXPECT_EQ(y.dtype(), DType::bf16);
  EXPECT_TRUE(test::equal(y, ref.to(DType::bf16))) << "one rounding of the fp32 sum";
  // Rows of any dtype are moved exactly.
  for (DType dt : {DType::f64, DType::bf16, DType::f16, DType::fp8_e4m3, DType::i32}) {
    const Tensor x = test::random_normal({tokens, hidden}, DType::f32, seed + 2).to(dt);
    const Tensor back = unpermute_forward(permute_forward(x, Tensor(), map).x.to(DType::f64), map);
    const Tensor expected = scale_rows(x.to(DType::f64), kept_per_token(map));
    EXPECT_TRUE(test::close_as(back, expected, DType::f64)) << dtype_name(dt);
  }
}

// ---- chunk sorting --------------------------------------------------------------------------

TEST(SortChunks, KnownAnswerAndInverse) {
  // Rows tagged by their index; chunks of 2, 0, 3, 1 rows.
  std::vector<float> v;
  for (int r = 0; r < 6; ++r) v.insert(v.end(), {float(r), float(10 * r)});
  const Tensor x = Tensor::from_vector(v, {6, 2});
  const std::vector<int64_t> sizes{2, 0, 3, 1}, order{2, 3, 1, 0};
  const Tensor y = sort_chunks(x, sizes, order);
  const auto rows = y.to_vector<float>();
  const std::vector<float> expected_rows{2, 3, 4, 5, 0, 1};
  for (int r = 0; r < 6; ++r) EXPECT_EQ(rows[2 * r], expected_rows[r]) << "row " << r;
  // Inverse: the reordered sizes and the inverse order.
  const std::vector<int64_t> sorted_sizes{3, 1, 0, 2}, inverse{3, 2, 0, 1};
  EXPECT_TRUE(test::equal(sort_chunks(y, sorted_sizes, inverse), x));
  // 1-D (probs) and integer rows.
  const Tensor p = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 3, 4, 5}, {6});
  EXPECT_EQ(sort_chunks(p, sizes, order).to_vector<int32_t>(),
            (std::vector<int32_t>{2, 3, 4, 5, 0, 1}));
  EXPECT_EQ(sort_chunks(Tensor::empty({0, 3}, DType::bf16), std::vector<int64_t>{0, 0},
                        std::vector<int64_t>{1, 0})
                .shape(),
            (Shape{0, 3}));
}

TEST(SortChunks, RejectsBadArguments) {
  const Tensor x = Tensor::zeros({6, 2}, DType::f32);
  EXPECT_THROW(sort_chunks(x, std::vector<int64_t>{2, 3}, std::vector<int64_t>{1, 0}),
               moe::Error);  // sizes add up to 5
  EXPECT_THROW(sort_chunks(x, std::vector<int64_t>{3, 3}, std::vector<int64_t>{0, 0}),
               moe::Error);  // not a permutation
  EXPECT_THROW(sort_chunks(x, std::vector<int64_t>{3, 3}, std::vector<int64_t>{0}), moe::Error);
  EXPECT_THROW(sort_chunks(x, std::vector<int64_t>{7, -1}, std::vector<int64_t>{0, 1}), moe::Error);
}

// ---- errors ---------------------------------------------------------------------------------

TEST(PermuteErrors, RejectsBadInput) {
  const Tensor ids = example_ids();
  EXPECT_THROW(make_permute_map(ids.to(DType::i64), {.num_experts = 3}), moe::Error);
  EXPECT_THROW(make_permute_map(ids.reshape({8}), {.num_experts = 3}), moe::Error);
  EXPECT_THROW(make_permute_map(ids, {.num_experts = 0}), moe::Error);
  EXPECT_THROW(make_permute_map(ids, {.num_experts = 2}), moe::Error);  // id 2 out of range
  EXPECT_THROW(make_permute_map(ids, {.num_experts = 3, .pad_multiple = 0}), moe::Error);
  EXPECT_THROW(make_permute_map(ids, {.num_experts = 3, .pad_to_capacity = true}), moe::Error);
  const PermuteMap map = make_permute_map(ids, {.num_experts = 3});
  const Tensor x = Tensor::zeros({4, 3}, DType::f32);
  EXPECT_THROW(permute_forward(Tensor::zeros({5, 3}, DType::f32), Tensor(), map), moe::Error);
  EXPECT_THROW(permute_forward(x.reshape({12}), Tensor(), map), moe::Error);
  EXPECT_THROW(permute_forward(x, Tensor::zeros({4, 3}, DType::f32), map), moe::Error);
  EXPECT_THROW(permute_forward(x, Tensor::zeros({4, 2}, DType::bf16), map), moe::Error);
  EXPECT_THROW(permute_backward(Tensor::zeros({7, 3}, DType::f32), Tensor(), map), moe::Error);
  EXPECT_THROW(
      permute_backward(Tensor::zeros({8, 3}, DType::f32), Tensor::zeros({7}, DType::f32), map),
      moe::Error);
  EXPECT_THROW(unpermute_forward(Tensor::zeros({8, 3}, DType::i32), map), moe::Error);
  EXPECT_THROW(unpermute_forward(Tensor::zeros({4, 3}, DType::f32), map), moe::Error);
  EXPECT_THROW(unpermute_backward(Tensor::zeros({8, 3}, DType::f32), map), moe::Error);
  PermuteMap broken = map;
  broken.num_rows = 9;
  EXPECT_THROW(unpermute_forward(Tensor::zeros({9, 3}, DType::f32), broken), moe::Error);
  EXPECT_THROW(drop_over_capacity(ids, Tensor(), 3, 2, DropPolicy::probs), moe::Error);
  EXPECT_THROW(drop_over_capacity(ids, Tensor::zeros({4, 2}, DType::f32), 2, 2, DropPolicy::probs),
               moe::Error);  // id 2 out of range
  EXPECT_THROW(drop_over_capacity(ids, Tensor(), 3, -1, DropPolicy::position), moe::Error);
}

}  // namespace
}  // namespace moe::ops
