// The parallel-equals-serial training suite (parallel_training_suite.h) on Local threads: every
// case of the matrix, each in a world of its own, on the CPU in f64.
#include <gtest/gtest.h>

#include "moe/dist/local_backend.h"
#include "train/parallel_training_suite.h"

namespace moe::train::test {
namespace {

class ParallelTraining : public ::testing::TestWithParam<ParallelTrainingCase> {};

TEST_P(ParallelTraining, EqualsOneRank) {
  const ParallelTrainingCase c = GetParam();
  dist::run_local(c.world, [&](std::shared_ptr<dist::ProcessGroup> world) {
    run_parallel_training_case(world, c, Device::cpu());
  });
}

INSTANTIATE_TEST_SUITE_P(Matrix, ParallelTraining, ::testing::ValuesIn(parallel_training_cases()),
                         [](const auto& info) { return case_name(info.param); });

}  // namespace
}  // namespace moe::train::test
