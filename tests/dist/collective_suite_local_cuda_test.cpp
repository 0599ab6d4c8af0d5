// The backend suite (collective_suite.h) on the Local backend with CUDA tensors: every case on
// 1, 2, 3 and 4 ranks (threads) sharing GPU 0.
#include <gtest/gtest.h>

#include <string>

#include "collective_suite.h"
#include "common/check.h"
#include "moe/dist/local_backend.h"

namespace moe::dist::test {
namespace {

struct Param {
  SuiteCase suite_case;
  int world;
};
void PrintTo(const Param& p, std::ostream* out) {
  *out << p.suite_case.name << " on " << p.world << " ranks";
}

class CollectiveSuiteLocalCuda : public ::testing::TestWithParam<Param> {};

TEST_P(CollectiveSuiteLocalCuda, Case) {
  MOE_REQUIRE_GPU();
  const Param& p = GetParam();
  run_local(p.world, [&](std::shared_ptr<ProcessGroup> group) {
    p.suite_case.run(*group, Device::cuda(0));
  });
}

std::vector<Param> params() {
  std::vector<Param> out;
  for (const SuiteCase& c : collective_suite())
    for (int world : {1, 2, 3, 4}) out.push_back({c, world});
  return out;
}

INSTANTIATE_TEST_SUITE_P(LocalCuda, CollectiveSuiteLocalCuda, ::testing::ValuesIn(params()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(info.param.suite_case.name) + "_world" +
                                  std::to_string(info.param.world);
                         });

}  // namespace
}  // namespace moe::dist::test
