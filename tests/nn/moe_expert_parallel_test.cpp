// EP invariance on the Local backend: under EP = 2, 4, 8 and ETP = 2, both dispatchers give
// every rank the outputs and gradients that one rank (EP = 1) computes for the same tokens;
// expert-weight gradients match the corresponding shard of the single-rank gradients and the
// router gradient matches once summed over ranks (as the data-parallel reduction will).
#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <tuple>

#include "moe/dist/local_backend.h"
#include "nn/moe_test_util.h"

namespace moe {
namespace {

using nn::MoEConfig;
using nn::MoELayer;


class ExpertParallel : public ::testing::TestWithParam<std::tuple<int, int, const char*>> {};

void check_invariance(int ep, int etp, const std::string& dispatcher, DType dtype) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const int world = ep * etp;
  MoEConfig base = test::small_moe_config(dtype);
  base.num_experts = 8;
  base.moe_ffn_hidden_size = 6;
  base.moe_token_dispatcher_type = dispatcher;
  base.moe_z_loss_coeff = 1e-3;
  base.moe_shared_expert_intermediate_size = 3;
  const int64_t T = 19;  // odd; some experts get no tokens from some ranks
  std::vector<Tensor> xs, dys;
  for (int r = 0; r < world; ++r) {
    xs.push_back(test::random_normal({T, base.hidden_size}, dtype, seed + 2 * r));
    dys.push_back(test::random_normal({T, base.hidden_size}, dtype, seed + 2 * r + 1));
  }

  // Reference: one rank, each rank's tokens in turn; parameter grads accumulate over them.
  MoELayer reference(base, Device::cpu());
  std::vector<Tensor> ref_y, ref_dx;
  for (int r = 0; r < world; ++r) {
    nn::MoEContext ctx;
    ref_y.push_back(reference.forward(xs[r], ctx));
    ref_dx.push_back(reference.backward(dys[r], ctx));
  }

  MoEConfig parallel = base;
  parallel.expert_model_parallel_size = ep;
  parallel.expert_tensor_parallel_size = etp;
  const double tol = test::tolerance(dtype) * 10;
  std::mutex mutex;
  std::vector<std::string> failures;
  dist::run_local(world, [&](std::shared_ptr<dist::ProcessGroup> group) {
    const int rank = group->rank();
    const nn::MoEGroups groups = test::expert_groups(group, ep, etp);
    MoELayer layer(parallel, Device::cpu(), groups);
    nn::MoEContext ctx;
    const Tensor y = layer.forward(xs[rank], ctx);
    const Tensor dx = layer.backward(dys[rank], ctx);
    Tensor router_grad = layer.router.weight.grad_value().clone();
    group->all_reduce(router_grad);
    // This rank's expected expert shards: slice the reference grads like the weights.
    nn::Experts expected(parallel, Device::cpu(), groups.ep_rank(), groups.etp_rank());
    expected.load_full(reference.experts.fc1.grad_value(), reference.experts.fc2.grad_value());
    nn::Experts initial(parallel, Device::cpu(), groups.ep_rank(), groups.etp_rank());
    initial.load_full(reference.experts.fc1.value, reference.experts.fc2.value);

    std::vector<::testing::AssertionResult> checks = {
        test::close(layer.experts.fc1.value, initial.fc1.value, 0.0, "initial fc1 shard"),
        test::close(y, ref_y[rank], tol, "y"),
        test::close(dx, ref_dx[rank], tol, "dx"),
        test::close(router_grad, reference.router.weight.grad_value(), tol, "router grad"),
        test::close(layer.experts.fc1.grad_value(), expected.fc1.value, tol, "fc1 grad"),
        test::close(layer.experts.fc2.grad_value(), expected.fc2.value, tol, "fc2 grad"),
    };
    std::lock_guard lock(mutex);
    for (auto& c : checks)
      if (!c) failures.push_back("rank " + std::to_string(rank) + ": " + c.message());
  });
  // Shared-expert grads are per-rank partial sums of the reference's: checked via dx and y.
  for (const std::string& f : failures) ADD_FAILURE() << f;
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
