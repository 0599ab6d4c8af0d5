// The backend suite (collective_suite.h) on the NCCL backend in one process: a world of one rank
// on GPU 0 (every case, host and device tensors). Several ranks, one process per GPU:
// nccl_collectives_multigpu_main.cpp.
#include <gtest/gtest.h>

#include <string>

#include "collective_suite.h"
#include "common/check.h"
#include "moe/dist/nccl_backend.h"

namespace moe::dist::test {
namespace {

class CollectiveSuiteNccl : public ::testing::TestWithParam<SuiteCase> {};

TEST_P(CollectiveSuiteNccl, Case) {
  MOE_REQUIRE_GPU();
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL";
  NcclOptions options;
  options.timeout = std::chrono::seconds(60);
  options.exit_on_failure = false;
  // The cases that break calls on purpose are harmless with one rank: the argument checks
  // throw on the rank that made the call, and there is no other rank to disagree with.
  auto world = make_nccl_world(nccl_unique_id(), 0, 1, 0, options);
  GetParam().run(*world, Device::cuda(0));
}

INSTANTIATE_TEST_SUITE_P(NcclWorldOfOne, CollectiveSuiteNccl,
                         ::testing::ValuesIn(collective_suite()),
                         [](const ::testing::TestParamInfo<SuiteCase>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace moe::dist::test
