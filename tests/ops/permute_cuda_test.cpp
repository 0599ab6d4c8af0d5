// CUDA permutation against the CPU reference on fresh random routings: maps and capacity drops
// compared exactly for odd sizes (T = 257, 3001: several 2048-slot tiles), E = 8 / 33 / 128,
// K = 1 / 2 / 8, experts with no tokens and every padding config; the row ops in f32, bf16 (the
// CUDA bf16 result against the CPU f32 reference on the same bf16-rounded inputs), f16 and f64,
// at H = 259 (scalar path), H = 4096 (16-byte path) and on a misaligned view; chunk sorting.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <sstream>
#include <vector>

#include "common/check.h"
#include "moe/ops/permute.h"
#include "ops/permute_testing.h"

namespace moe::ops {
namespace {

using test::RoutingSpec;

using test::gpu;
using test::host;

// Usable experts of a spec with holes (every third expert left empty).
bool routable(const RoutingSpec& spec) {
  int64_t usable = 0;
  for (int64_t e = 0; e < spec.experts; ++e) usable += !spec.holes || e % 3 != 1;
  return usable >= spec.topk;
}

std::vector<PermuteConfig> all_configs(int64_t tokens, int64_t topk, int64_t experts) {
  const int64_t capacity = std::max<int64_t>(expert_capacity(tokens, topk, experts, 1.0), 1);
  return {
      {.num_experts = experts},
      {.num_experts = experts, .pad_multiple = 16},
      {.num_experts = experts, .capacity = capacity, .pad_to_capacity = true},
      {.num_experts = experts, .pad_multiple = 16, .capacity = capacity, .pad_to_capacity = true}};
}

std::string describe(const RoutingSpec& s, const PermuteConfig& c) {
  std::ostringstream out;
  out << "T=" << s.tokens << " K=" << s.topk << " E=" << s.experts << " holes=" << s.holes
      << " drop=" << s.drop << " pad=" << c.pad_multiple << " cap=" << c.capacity
      << (c.pad_to_capacity ? " (pad to capacity)" : "");
  return out.str();
}

void expect_same_map(const PermuteMap& g, const PermuteMap& c) {
  EXPECT_EQ(g.num_tokens, c.num_tokens);
  EXPECT_EQ(g.topk, c.topk);
  EXPECT_EQ(g.num_rows, c.num_rows);
  EXPECT_TRUE(g.slot_to_row.is_cuda() && g.row_to_slot.is_cuda() && g.tokens_per_expert.is_cuda());
  EXPECT_TRUE(test::equal(host(g.slot_to_row), c.slot_to_row, "slot_to_row"));
  EXPECT_TRUE(test::equal(host(g.row_to_slot), c.row_to_slot, "row_to_slot"));
  EXPECT_TRUE(test::equal(host(g.tokens_per_expert), c.tokens_per_expert, "tokens_per_expert"));
}

TEST(PermuteCuda, MapsMatchCpuExactly) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t case_seed = seed;
  for (int64_t tokens : {0, 1, 257, 3001}) {
    for (int64_t topk : {1, 2, 8}) {
      for (int64_t experts : {8, 33, 128}) {
        for (bool holes : {false, true}) {
          const RoutingSpec spec{.tokens = tokens,
                                 .topk = topk,
                                 .experts = experts,
                                 .holes = holes,
                                 .drop = holes ? 0.1 : 0.0};
          if (!routable(spec)) continue;
          const Tensor ids = test::random_routing(spec, ++case_seed);
          const Tensor ids_gpu = gpu(ids);
          for (const PermuteConfig& config : all_configs(tokens, topk, experts)) {
            SCOPED_TRACE(describe(spec, config));
            expect_same_map(make_permute_map(ids_gpu, config), make_permute_map(ids, config));
          }
        }
      }
    }
  }
}

TEST(PermuteCuda, AllSlotsOfOneExpert) {
  // Every slot on expert 3 (a hot expert spanning many tiles); the others get nothing.
  MOE_REQUIRE_GPU();
  const Tensor ids = Tensor::full({5000, 1}, 3, DType::i32);
  for (const PermuteConfig& config : all_configs(5000, 1, 8)) {
    SCOPED_TRACE(describe({.tokens = 5000, .topk = 1, .experts = 8}, config));
    expect_same_map(make_permute_map(gpu(ids), config), make_permute_map(ids, config));
  }
}

TEST(PermuteCuda, DropsMatchCpuExactly) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  uint64_t case_seed = seed;
  for (int64_t tokens : {0, 257, 3001}) {
    for (int64_t topk : {1, 2, 8}) {
      for (int64_t experts : {8, 33, 128}) {
        const RoutingSpec spec{.tokens = tokens,
                               .topk = topk,
                               .experts = experts,
                               .holes = experts > topk * 2,
                               .drop = 0.05};
        if (!routable(spec)) continue;
        const Tensor ids = test::random_routing(spec, ++case_seed);
        // Tied probs (ties broken by slot index), continuous f32 and f64 probs.
        const std::vector<Tensor> all_probs{
            test::tied_probs(tokens, topk, ++case_seed),
            test::random_uniform({tokens, topk}, DType::f32, ++case_seed, 0.0, 1.0),
            test::random_uniform({tokens, topk}, DType::f64, ++case_seed, 0.0, 1.0)};
        for (double factor : {0.5, 1.0, 1.3}) {
          const int64_t capacity = expert_capacity(tokens, topk, experts, factor);
          for (const Tensor& probs : all_probs) {
            for (DropPolicy policy : {DropPolicy::probs, DropPolicy::position}) {
              SCOPED_TRACE(testing::Message()
                           << describe(spec, {}) << " capacity " << capacity << " probs "
                           << probs.dtype()
                           << (policy == DropPolicy::probs ? " probs" : " position"));
              const Tensor expected = drop_over_capacity(ids, probs, experts, capacity, policy);
              const Tensor got =
                  drop_over_capacity(gpu(ids), gpu(probs), experts, capacity, policy);
              EXPECT_TRUE(got.is_cuda());
              EXPECT_TRUE(test::equal(host(got), expected, "dropped ids"));
            }
          }
        }
      }
    }
  }
}

// ---- rows -----------------------------------------------------------------------------------


struct RowCase {
  DType dtype;
  int64_t hidden;
  int64_t topk;
  bool misaligned;
};

// Runs all four row ops on CUDA and on the CPU (in f32 for bf16/f16, on the same rounded
// inputs) and compares them.
void check_rows(const RowCase& rc, const PermuteConfig& config, const Tensor& ids, uint64_t seed) {
  const PermuteMap cmap = make_permute_map(ids, config);
  const PermuteMap gmap = make_permute_map(gpu(ids), config);
  const int64_t tokens = ids.size(0), topk = ids.size(1), rows = cmap.num_rows;
  const bool low = rc.dtype == DType::bf16 || rc.dtype == DType::f16;
  const DType ref_dtype = low ? DType::f32 : rc.dtype;
  // Inputs in the kernel's dtype; the reference sees the same values.
  auto make = [&](const Shape& shape, uint64_t s) {
    const Tensor v = test::random_normal(shape, DType::f32, s).to(rc.dtype);
    return std::pair{v.to(ref_dtype), rc.misaligned ? test::misaligned_gpu(gpu(v)) : gpu(v)};
  };
  const auto [x_ref, x_gpu] = make({tokens, rc.hidden}, seed);
  const auto [yp_ref, yp_gpu] = make({rows, rc.hidden}, seed + 1);
  const auto [dy_ref, dy_gpu] = make({tokens, rc.hidden}, seed + 2);
  const Tensor probs = test::random_uniform({tokens, topk}, DType::f32, seed + 3, 0.0, 1.0);
  const Tensor d_probs_perm = test::random_normal({rows}, DType::f32, seed + 4);

  const Permuted pc = permute_forward(x_ref, probs, cmap);
  const Permuted pg = permute_forward(x_gpu, gpu(probs), gmap);
  EXPECT_EQ(pg.x.dtype(), rc.dtype);
  EXPECT_TRUE(test::equal(host(pg.x).to(ref_dtype), pc.x, "permute x"));
  EXPECT_TRUE(test::equal(host(pg.probs), pc.probs, "permute probs"));
  EXPECT_TRUE(test::equal(host(permute_forward(x_gpu, Tensor(), gmap).x).to(ref_dtype), pc.x,
                          "permute x without probs"));

  EXPECT_TRUE(test::equal(host(unpermute_backward(dy_gpu, gmap)).to(ref_dtype),
                          unpermute_backward(dy_ref, cmap), "unpermute_backward"));

  const Tensor y_gpu = unpermute_forward(yp_gpu, gmap);
  EXPECT_EQ(y_gpu.dtype(), rc.dtype);
  EXPECT_TRUE(
      test::close_as(host(y_gpu), unpermute_forward(yp_ref, cmap), rc.dtype, "unpermute_forward"));

  const PermuteGrads gc = permute_backward(yp_ref, d_probs_perm, cmap);
  const PermuteGrads gg = permute_backward(yp_gpu, gpu(d_probs_perm), gmap);
  EXPECT_TRUE(test::close_as(host(gg.x), gc.x, rc.dtype, "permute_backward dx"));
  EXPECT_TRUE(test::equal(host(gg.probs), gc.probs, "permute_backward dprobs"));
}

TEST(PermuteCuda, RowOpsMatchCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int64_t tokens = 257;
  std::vector<RowCase> cases;
  for (DType dt : {DType::f32, DType::bf16})
    for (int64_t hidden : {259, 4096})
      for (int64_t topk : {1, 2, 8}) cases.push_back({dt, hidden, topk, false});
  cases.push_back({DType::f16, 259, 2, false});
  cases.push_back({DType::f64, 259, 2, false});
  cases.push_back({DType::f64, 256, 2, false});
  cases.push_back({DType::bf16, 4096, 2, true});
  cases.push_back({DType::f32, 256, 8, true});
  uint64_t case_seed = seed;
  size_t index = 0;
  for (const RowCase& rc : cases) {
    const int64_t experts = std::vector<int64_t>{8, 33, 128}[index++ % 3];
    RoutingSpec spec{
        .tokens = tokens, .topk = rc.topk, .experts = experts, .holes = true, .drop = 0.1};
    if (!routable(spec)) spec.holes = false;
    const Tensor ids = test::random_routing(spec, ++case_seed);
    for (const PermuteConfig& config : all_configs(tokens, rc.topk, experts)) {
      SCOPED_TRACE(testing::Message()
                   << dtype_name(rc.dtype) << " H=" << rc.hidden
                   << (rc.misaligned ? " misaligned " : " ") << describe(spec, config));
      check_rows(rc, config, ids, ++case_seed);
    }
  }
}

TEST(PermuteCuda, ZeroTokens) {
  MOE_REQUIRE_GPU();
  const Tensor ids = Tensor::empty({0, 2}, DType::i32, Device::cuda());
  for (const PermuteConfig& config :
       {PermuteConfig{.num_experts = 8}, PermuteConfig{.num_experts = 8, .pad_multiple = 16},
        PermuteConfig{.num_experts = 8, .capacity = 3, .pad_to_capacity = true}}) {
    const PermuteMap map = make_permute_map(ids, config);
    expect_same_map(map, make_permute_map(host(ids), config));
    const Tensor x = Tensor::empty({0, 16}, DType::bf16, Device::cuda());
    const Permuted p = permute_forward(x, Tensor::empty({0, 2}, DType::f32, Device::cuda()), map);
    EXPECT_TRUE(test::equal(host(p.x), Tensor::zeros({map.num_rows, 16}, DType::bf16)));
    EXPECT_TRUE(test::equal(host(p.probs), Tensor::zeros({map.num_rows}, DType::f32)));
    EXPECT_EQ(unpermute_forward(p.x, map).shape(), (Shape{0, 16}));
    EXPECT_EQ(permute_backward(p.x, p.probs, map).probs.shape(), (Shape{0, 2}));
    EXPECT_EQ(unpermute_backward(x, map).shape(), (Shape{map.num_rows, 16}));
  }
  EXPECT_EQ(drop_over_capacity(ids, Tensor::empty({0, 2}, DType::f32, Device::cuda()), 8, 2,
                               DropPolicy::probs)
                .shape(),
            (Shape{0, 2}));
}

// ---- chunk sorting --------------------------------------------------------------------------

TEST(PermuteCuda, SortChunksMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  std::mt19937_64 gen(seed);
  // 300 chunks (more than one launch's batch), a quarter of them empty.
  const size_t n = 300;
  std::vector<int64_t> sizes(n), order(n);
  std::uniform_int_distribution<int64_t> size(0, 5);
  for (int64_t& s : sizes) s = gen() % 4 == 0 ? 0 : size(gen);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), gen);
  const int64_t rows = std::accumulate(sizes.begin(), sizes.end(), int64_t(0));
  for (auto [dtype, hidden] : std::vector<std::pair<DType, int64_t>>{
           {DType::f32, 259}, {DType::bf16, 4096}, {DType::bf16, 259}, {DType::fp8_e4m3, 33}}) {
    SCOPED_TRACE(testing::Message() << dtype_name(dtype) << " H=" << hidden);
    const Tensor x = test::random_normal({rows, hidden}, DType::f32, seed + hidden).to(dtype);
    EXPECT_TRUE(test::equal(host(sort_chunks(gpu(x), sizes, order)), sort_chunks(x, sizes, order)));
  }
  const Tensor probs = test::random_uniform({rows}, DType::f32, seed + 1, 0.0, 1.0);
  EXPECT_TRUE(
      test::equal(host(sort_chunks(gpu(probs), sizes, order)), sort_chunks(probs, sizes, order)));
}

}  // namespace
}  // namespace moe::ops
