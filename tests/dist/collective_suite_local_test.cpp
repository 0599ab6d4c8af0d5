// The backend suite (collective_suite.h) on the Local backend: every case on 1, 2, 3 and 4 ranks
// (threads), host tensors, each case in a world of its own.
#include <gtest/gtest.h>

#include <string>

#include "collective_suite.h"
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

class CollectiveSuiteLocal : public ::testing::TestWithParam<Param> {};

TEST_P(CollectiveSuiteLocal, Case) {
  const Param& p = GetParam();
  run_local(p.world,
            [&](std::shared_ptr<ProcessGroup> group) { p.suite_case.run(*group, Device::cpu()); });
}

std::vector<Param> params() {
  std::vector<Param> out;
  for (const SuiteCase& c : collective_suite())
    for (int world : {1, 2, 3, 4}) out.push_back({c, world});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Local, CollectiveSuiteLocal, ::testing::ValuesIn(params()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(info.param.suite_case.name) + "_world" +
                                  std::to_string(info.param.world);
                         });

}  // namespace
}  // namespace moe::dist::test
