// The backend suite (collective_suite.h) on the Local backend: every case on 1, 2, 3 and 4 ranks
// (threads), host tensors, each case in a world of its own.
#include <gtest/gtest.h>

#include <string>

#include "collective_suite.h"
#include "moe/dist/local_backend.h"

namespace moe::dist::test {
namespace {

class CollectiveSuiteLocal : public ::testing::TestWithParam<LocalSuiteParam> {};

TEST_P(CollectiveSuiteLocal, Case) {
  const LocalSuiteParam& p = GetParam();
  run_local(p.world,
            [&](std::shared_ptr<ProcessGroup> group) { p.suite_case.run(*group, Device::cpu()); });
}

INSTANTIATE_TEST_SUITE_P(Local, CollectiveSuiteLocal, ::testing::ValuesIn(local_suite_params()),
                         [](const ::testing::TestParamInfo<LocalSuiteParam>& info) {
                           return local_suite_param_name(info.param);
                         });

}  // namespace
}  // namespace moe::dist::test
