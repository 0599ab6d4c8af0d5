// The backend suite (collective_suite.h) on the Local backend with CUDA tensors: every case on
// 1, 2, 3 and 4 ranks (threads) sharing GPU 0.
#include <gtest/gtest.h>

#include <string>

#include "collective_suite.h"
#include "common/check.h"
#include "moe/dist/local_backend.h"

namespace moe::dist::test {
namespace {

class CollectiveSuiteLocalCuda : public ::testing::TestWithParam<LocalSuiteParam> {};

TEST_P(CollectiveSuiteLocalCuda, Case) {
  MOE_REQUIRE_GPU();
  const LocalSuiteParam& p = GetParam();
  run_local(p.world, [&](std::shared_ptr<ProcessGroup> group) {
    p.suite_case.run(*group, Device::cuda(0));
  });
}

INSTANTIATE_TEST_SUITE_P(LocalCuda, CollectiveSuiteLocalCuda,
                         ::testing::ValuesIn(local_suite_params()),
                         [](const ::testing::TestParamInfo<LocalSuiteParam>& info) {
                           return local_suite_param_name(info.param);
                         });

}  // namespace
}  // namespace moe::dist::test
