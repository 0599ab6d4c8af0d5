// EP invariance on the Local backend: under EP = 2, 4, 8 and ETP = 2, both dispatchers give
// every rank the outputs and gradients that one rank (EP = 1) computes for the same tokens;
// expert-weight gradients match the corresponding shard of the single-rank gradients and the
// router gradient matches once summed over ranks (as the data-parallel reduction will).
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "nn/moe_test_util.h"

namespace moe {
namespace {

using nn::MoEConfig;
using nn::MoELayer;


class ExpertParallel : public ::testing::TestWithParam<std::tuple<int, int, const char*>> {};

void check_invariance(int ep, int etp, const std::string& dispatcher, DType dtype) {
  MoEConfig base = test::small_moe_config(dtype);
  base.num_experts = 8;
  base.moe_ffn_hidden_size = 6;
  base.moe_token_dispatcher_type = dispatcher;
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

INSTANTIATE_TEST_SUITE_P(
    Mappings, ExpertParallel,
    ::testing::Combine(::testing::Values(1, 2, 4, 8), ::testing::Values(1, 2),
                       ::testing::Values("allgather", "alltoall")),
    [](const auto& info) {
      return "ep" + std::to_string(std::get<0>(info.param)) + "_etp" +
             std::to_string(std::get<1>(info.param)) + "_" + std::get<2>(info.param);
    });

TEST(ExpertParallel, F32WithinTolerance) { check_invariance(4, 2, "alltoall", DType::f32); }

}  // namespace
}  // namespace moe
