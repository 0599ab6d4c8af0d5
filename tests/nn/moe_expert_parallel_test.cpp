// EP invariance on the Local backend: under EP = 2, 4, 8 and ETP = 2, both dispatchers give
// every rank the outputs and gradients that one rank (EP = 1) computes for the same tokens;
// expert-weight gradients match the corresponding shard of the single-rank gradients and the
// router gradient matches once summed over ranks (as the data-parallel reduction will).
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <utility>

#include "nn/moe_test_util.h"

namespace moe {
namespace {

using nn::MoEConfig;
using nn::MoELayer;

class ExpertParallel : public ::testing::TestWithParam<std::tuple<int, int, const char*>> {};

void check_invariance(int ep, int etp, const std::string& dispatcher, DType dtype,
                      bool shared_expert_overlap = false) {
  MoEConfig base = test::small_moe_config(dtype);
  base.moe_shared_expert_overlap = shared_expert_overlap;
  base.num_experts = 8;
  base.moe_ffn_hidden_size = 6;
  base.moe_token_dispatcher_type = nn::parse_dispatcher_type(dispatcher);
  base.moe_z_loss_coeff = 1e-3;
  base.moe_shared_expert_intermediate_size = 3;
  // 19 tokens per rank: odd, and some experts get no tokens from some ranks.
  test::check_expert_parallel_invariance(base, ep, etp, 19, Device::cpu(),
                                         test::tolerance(dtype) * 10);
}

TEST_P(ExpertParallel, MatchesOneRank) {
  const auto [ep, etp, dispatcher] = GetParam();
  check_invariance(ep, etp, dispatcher, DType::f64);
}

INSTANTIATE_TEST_SUITE_P(Mappings, ExpertParallel,
                         ::testing::Combine(::testing::Values(1, 2, 4, 8), ::testing::Values(1, 2),
                                            ::testing::Values("allgather", "alltoall")),
                         [](const auto& info) {
                           return "ep" + std::to_string(std::get<0>(info.param)) + "_etp" +
                                  std::to_string(std::get<1>(info.param)) + "_" +
                                  std::get<2>(info.param);
                         });

TEST(ExpertParallel, F32WithinTolerance) {
  check_invariance(4, 2, "alltoall", DType::f32);
}

// --moe-shared-expert-overlap: the shared expert computes while the alltoall dispatcher's
// exchanges (forward dispatch, backward combine) are in flight; the results do not change.
TEST(ExpertParallel, SharedExpertOverlapMatchesOneRank) {
  for (const auto& [ep, etp] : {std::pair{2, 1}, std::pair{4, 1}, std::pair{2, 2}}) {
    SCOPED_TRACE("EP " + std::to_string(ep) + " ETP " + std::to_string(etp));
    check_invariance(ep, etp, "alltoall", DType::f64, /*shared_expert_overlap=*/true);
  }
}

// Drop-and-pad (--moe-expert-capacity-factor with --moe-pad-expert-input-to-capacity): every
// rank pads each expert to the capacity of its own tokens, so the alltoall dispatcher knows
// every count without exchanging them; the results are still those of one rank.
TEST(ExpertParallel, DropAndPadMatchesOneRank) {
  for (const auto& [ep, etp] : {std::pair{2, 1}, std::pair{4, 1}, std::pair{2, 2}})
    for (const char* dispatcher : {"alltoall", "allgather"}) {
      SCOPED_TRACE("EP " + std::to_string(ep) + " ETP " + std::to_string(etp) + " " + dispatcher);
      MoEConfig base = test::small_moe_config(DType::f64);
      base.num_experts = 8;
      base.moe_ffn_hidden_size = 6;
      base.moe_token_dispatcher_type = nn::parse_dispatcher_type(dispatcher);
      base.moe_expert_capacity_factor = 0.8;  // some tokens are dropped
      base.moe_pad_expert_input_to_capacity = true;
      test::check_expert_parallel_invariance(base, ep, etp, 19, Device::cpu(),
                                             test::tolerance(DType::f64) * 10);
    }
}

// The ranks of an expert group pad to the capacity of their own token counts: counts that
// differ are refused at the first dispatch, on every rank, naming them.
TEST(ExpertParallel, DropAndPadRefusesRanksOfOtherTokenCounts) {
  MoEConfig c = test::small_moe_config(DType::f64);
  c.num_experts = 8;
  c.moe_token_dispatcher_type = nn::DispatcherType::alltoall;
  c.moe_expert_capacity_factor = 1.0;
  c.moe_pad_expert_input_to_capacity = true;
  c.expert_model_parallel_size = 2;
  std::vector<std::string> errors(2);
  dist::run_local(2, [&](std::shared_ptr<dist::ProcessGroup> group) {
    const nn::MoEGroups groups = test::expert_groups(group, 2, 1);
    MoELayer layer(c, Device::cpu(), groups);
    nn::MoEContext ctx;
    const int64_t tokens = group->rank() == 0 ? 19 : 17;
    try {
      layer.forward(test::random_normal({tokens, c.hidden_size}, DType::f64, 3), ctx);
    } catch (const Error& e) {
      errors[static_cast<size_t>(group->rank())] = e.what();
    }
  });
  for (const std::string& e : errors)
    EXPECT_NE(e.find("must route the same number of tokens"), std::string::npos) << e;
}

TEST(ExpertParallel, SharedExpertOverlapNeedsTheAlltoallDispatcher) {
  MoEConfig c = test::small_moe_config(DType::f64);
  c.moe_shared_expert_intermediate_size = 3;
  c.moe_shared_expert_overlap = true;
  c.moe_token_dispatcher_type = nn::DispatcherType::allgather;
  try {
    c.validate();
    ADD_FAILURE() << "the allgather dispatcher with --moe-shared-expert-overlap was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--moe-shared-expert-overlap"), std::string::npos)
        << e.what();
  }
  c.moe_token_dispatcher_type = nn::DispatcherType::alltoall;
  EXPECT_NO_THROW(c.validate());
}

}  // namespace
}  // namespace moe
