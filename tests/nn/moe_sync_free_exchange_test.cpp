// The alltoall dispatcher's sync-free exchange (--moe-expert-rank-capacity-factor) on the Local
// backend: with slots that hold every row it computes what one rank computes (outputs, input
// and weight gradients) under EP 2, 4, 8 and ETP 2, with and without token dropping, and exactly
// what the synchronising exchange computes (the same rows in the same order: bitwise); with
// short slots the dispatcher records the peak each source routed to one destination (counted
// here from the routing), the tokens whose destinations all fit are untouched, and the
// synchronising fallback restores the one-rank result.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "nn/moe_test_util.h"

namespace moe {
namespace {

using nn::MoEConfig;
using nn::MoELayer;

MoEConfig slots_config(DType dtype, double factor) {
  MoEConfig c = test::small_moe_config(dtype);
  c.num_experts = 8;
  c.moe_ffn_hidden_size = 6;
  c.moe_token_dispatcher_type = nn::DispatcherType::alltoall;
  c.moe_z_loss_coeff = 1e-3;
  c.moe_shared_expert_intermediate_size = 3;
  c.moe_expert_rank_capacity_factor = factor;
  return c;
}

TEST(SyncFreeExchange, AmpleSlotsMatchOneRank) {
  // Factor 8 >= EP: each pair's slot holds all T * K rows a source has.
  for (const auto& [ep, etp] :
       {std::pair{2, 1}, std::pair{4, 1}, std::pair{8, 1}, std::pair{2, 2}, std::pair{4, 2}}) {
    SCOPED_TRACE("EP " + std::to_string(ep) + " ETP " + std::to_string(etp));
    test::check_expert_parallel_invariance(slots_config(DType::f64, 8.0), ep, etp, 19,
                                           Device::cpu(), test::tolerance(DType::f64) * 10);
  }
}

TEST(SyncFreeExchange, WithSharedExpertOverlapAndFp8PaddingMatchesOneRank) {
  // The shared expert computing while the slots are in flight; each expert's rows padded to
  // multiples of 16 (the slots then too).
  for (const bool overlap : {true, false}) {
    MoEConfig c = slots_config(DType::f64, 8.0);
    c.moe_shared_expert_overlap = overlap;
    c.moe_router_padding_for_fp8 = !overlap;
    SCOPED_TRACE(overlap ? "shared expert overlap" : "fp8 padding");
    for (const auto& [ep, etp] : {std::pair{2, 1}, std::pair{4, 1}, std::pair{2, 2}})
      test::check_expert_parallel_invariance(c, ep, etp, 19, Device::cpu(),
                                             test::tolerance(DType::f64) * 10);
  }
}

TEST(SyncFreeExchange, WithTokenDroppingMatchesOneRank) {
  // --moe-expert-capacity-factor without padding: the counts vary below the capacity, and the
  // exchange of fixed slots carries them as the synchronising one does.
  MoEConfig c = slots_config(DType::f64, 8.0);
  c.moe_expert_capacity_factor = 0.8;
  for (const auto& [ep, etp] : {std::pair{2, 1}, std::pair{4, 1}, std::pair{2, 2}}) {
    SCOPED_TRACE("EP " + std::to_string(ep) + " ETP " + std::to_string(etp));
    test::check_expert_parallel_invariance(c, ep, etp, 19, Device::cpu(),
                                           test::tolerance(DType::f64) * 10);
  }
}

// Per rank: y, dx and every gradient of the layer after one forward and backward.
struct LayerRun {
  Tensor y, dx, router_grad, fc1_grad, fc2_grad;
  Tensor expert_ids;  // the routing, [T, K]
  int64_t peak_rows = -1, slot_rows = 0;
};

std::vector<LayerRun> run_layers(const MoEConfig& c, int ep, int etp, int64_t tokens, uint64_t seed,
                                 bool synchronising = false) {
  const int world = ep * etp;
  std::vector<LayerRun> runs(static_cast<size_t>(world));
  dist::run_local(world, [&](std::shared_ptr<dist::ProcessGroup> group) {
    const int rank = group->rank();
    MoEConfig parallel = c;
    parallel.expert_model_parallel_size = ep;
    parallel.expert_tensor_parallel_size = etp;
    MoELayer layer(parallel, Device::cpu(), test::expert_groups(group, ep, etp));
    layer.set_synchronising_dispatch(synchronising);
    const DType dtype = c.params_dtype;
    nn::MoEContext ctx;
    LayerRun& r = runs[static_cast<size_t>(rank)];
    r.y = layer.forward(test::random_normal({tokens, c.hidden_size}, dtype, seed + 2 * rank), ctx);
    r.expert_ids = ctx.router.expert_ids.clone();
    r.dx = layer.backward(test::random_normal({tokens, c.hidden_size}, dtype, seed + 2 * rank + 1),
                          ctx);
    r.router_grad = layer.router.weight.grad_value().clone();
    r.fc1_grad = layer.experts.fc1.grad_value().clone();
    r.fc2_grad = layer.experts.fc2.grad_value().clone();
    const nn::TokenDispatcher::SlotUsage usage = layer.slot_usage();
    if (usage.peak_rows.defined()) {
      r.peak_rows = usage.peak_rows.to_vector<int64_t>().front();
      r.slot_rows = usage.slot_rows;
    }
  });
  return runs;
}

TEST(SyncFreeExchange, EqualsTheSynchronisingExchangeBitwise) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const auto& [ep, etp] : {std::pair{4, 1}, std::pair{2, 2}}) {
    SCOPED_TRACE("EP " + std::to_string(ep) + " ETP " + std::to_string(etp));
    const MoEConfig c = slots_config(DType::f32, 8.0);
    const std::vector<LayerRun> slots = run_layers(c, ep, etp, 23, seed);
    const std::vector<LayerRun> sync = run_layers(c, ep, etp, 23, seed, /*synchronising=*/true);
    for (size_t r = 0; r < slots.size(); ++r) {
      SCOPED_TRACE("rank " + std::to_string(r));
      EXPECT_GE(slots[r].peak_rows, 0) << "the slots were not used";
      EXPECT_EQ(sync[r].peak_rows, -1) << "the synchronising exchange used slots";
      EXPECT_TRUE(test::close(slots[r].y, sync[r].y, 0.0, "y"));
      EXPECT_TRUE(test::close(slots[r].dx, sync[r].dx, 0.0, "dx"));
      EXPECT_TRUE(test::close(slots[r].router_grad, sync[r].router_grad, 0.0, "router grad"));
      EXPECT_TRUE(test::close(slots[r].fc1_grad, sync[r].fc1_grad, 0.0, "fc1 grad"));
      EXPECT_TRUE(test::close(slots[r].fc2_grad, sync[r].fc2_grad, 0.0, "fc2 grad"));
    }
  }
}

TEST(SyncFreeExchange, ShortSlotsRecordThePeakAndSpareTheTokensThatFit) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int ep = 4;
  const int64_t T = 29, K = 2, El = 2;
  // Even share T * K / EP = 14.5 rows per destination; factor 0.9 -> slots of 14 rows.
  const MoEConfig c = slots_config(DType::f64, 0.9);
  const std::vector<LayerRun> slots = run_layers(c, ep, 1, T, seed);
  const std::vector<LayerRun> sync = run_layers(c, ep, 1, T, seed, /*synchronising=*/true);
  int64_t short_ranks = 0, spared = 0, hit = 0;
  for (size_t r = 0; r < slots.size(); ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(slots[r].slot_rows, 14);
    // The rows this rank routed to each destination, from its routing.
    const std::vector<int32_t> ids = slots[r].expert_ids.to_vector<int32_t>();
    std::vector<int64_t> routed(static_cast<size_t>(ep), 0);
    for (int32_t e : ids)
      if (e >= 0) ++routed[static_cast<size_t>(e / El)];
    EXPECT_EQ(slots[r].peak_rows, *std::max_element(routed.begin(), routed.end()));
    short_ranks += slots[r].peak_rows > slots[r].slot_rows;
    // A token whose experts all sit on destinations within the budget keeps its output (what
    // the other ranks' short slots drop never reaches this rank's tokens).
    const std::vector<double> got = slots[r].y.to_vector<double>();
    const std::vector<double> want = sync[r].y.to_vector<double>();
    const int64_t H = c.hidden_size;
    for (int64_t t = 0; t < T; ++t) {
      bool fits = true;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t e = ids[static_cast<size_t>(t * K + k)];
        fits = fits && routed[static_cast<size_t>(e / El)] <= slots[r].slot_rows;
      }
      double diff = 0.0;
      for (int64_t h = 0; h < H; ++h)
        diff = std::max(diff, std::abs(got[static_cast<size_t>(t * H + h)] -
                                       want[static_cast<size_t>(t * H + h)]));
      if (fits) {
        ++spared;
        EXPECT_LE(diff, 1e-12) << "token " << t << " fits its slots but its output changed";
      } else {
        hit += diff > 1e-6;
      }
    }
  }
  // 58 rows over 4 destinations: a rank's busiest destination gets at least 15 > 14.
  EXPECT_EQ(short_ranks, ep);
  EXPECT_GT(spared, 0) << "no token fitted: the test checks nothing";
  EXPECT_GT(hit, 0) << "no token lost a row: the short slots dropped nothing";
}

TEST(SyncFreeExchange, SynchronisingFallbackMatchesOneRank) {
  // The redo of a step: with the fallback on, short slots do not matter.
  MoEConfig c = slots_config(DType::f64, 0.2);
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int ep = 2;
  const int64_t T = 19;
  MoELayer reference(c, Device::cpu());
  const std::vector<LayerRun> runs = run_layers(c, ep, 1, T, seed, /*synchronising=*/true);
  for (int r = 0; r < ep; ++r) {
    nn::MoEContext ctx;
    const Tensor y = reference.forward(
        test::random_normal({T, c.hidden_size}, c.params_dtype, seed + 2 * r), ctx);
    EXPECT_TRUE(
        test::close(runs[static_cast<size_t>(r)].y, y, 1e-12, "y of rank " + std::to_string(r)));
  }
}

TEST(SyncFreeExchange, FlagRules) {
  MoEConfig c = slots_config(DType::f64, 1.5);
  EXPECT_NO_THROW(c.validate());
  const auto refused = [](MoEConfig bad, const char* says) {
    try {
      bad.validate();
      ADD_FAILURE() << "accepted; expected an error naming " << says;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  MoEConfig zero = c;
  zero.moe_expert_rank_capacity_factor = 0.0;
  refused(zero, "must be positive");
  MoEConfig allgather = c;
  allgather.moe_token_dispatcher_type = nn::DispatcherType::allgather;
  refused(allgather, "--moe-token-dispatcher-type alltoall");
  MoEConfig padded = c;
  padded.moe_expert_capacity_factor = 1.0;
  padded.moe_pad_expert_input_to_capacity = true;
  refused(padded, "--moe-pad-expert-input-to-capacity");
}

}  // namespace
}  // namespace moe
