// moe_mpi_training_tests: the parallel-equals-serial training suite
// (parallel_training_suite.h) on the MPI backend, one rank per process:
//   mpirun --allow-run-as-root --oversubscribe -np 4 moe_mpi_training_tests [--device cuda]
//          [gtest flags]
// The cases are those of the world's size (process_runner_cases: one combination of the DDP
// options per mapping and dispatcher, and the tensor-parallel mappings); every rank runs every
// case on the world group, on the CPU in f64, or with --device cuda on GPU 0, which the ranks
// share, in bf16. Rank 0 prints GoogleTest's report; every rank prints its failures prefixed
// "[rank R]". The job exits non-zero when any rank failed. An exception that escapes a case ends
// the job through dist::report_and_abort, naming the rank.
#include <gtest/gtest.h>

#include <cstdio>
#include <stdexcept>
#include <string>

#include "common/check.h"
#include "dist/collective_suite.h"
#include "moe/dist/fatal.h"
#include "moe/dist/mpi_backend.h"
#include "train/parallel_training_suite.h"

namespace moe::train::test {
namespace {

std::shared_ptr<dist::ProcessGroup> g_world;
Device g_device = Device::cpu();

class MpiParallelTraining : public ::testing::Test {
 public:
  explicit MpiParallelTraining(ParallelTrainingCase c) : case_(std::move(c)) {}
  void TestBody() override { run_parallel_training_case(g_world, case_, g_device); }

 private:
  ParallelTrainingCase case_;
};

// The cases depend on the world's size, known once MPI is up: registered then, in the same
// order on every rank (a filter must be the same on every rank too: every rank runs each case).
void register_cases(int world) {
  for (const ParallelTrainingCase& c : process_runner_cases(world))
    ::testing::RegisterTest("MpiParallelTraining", case_name(c).c_str(), nullptr,
                            case_name(c).c_str(), __FILE__, __LINE__,
                            [c]() -> ::testing::Test* { return new MpiParallelTraining(c); });
}

int run(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--device" && i + 1 < argc) {
      const std::string device = argv[++i];
      if (device == "cuda") {
        g_device = Device::cuda(0);
      } else if (device != "cpu") {
        throw std::invalid_argument("--device " + device + ": expected cpu or cuda");
      }
    } else {
      throw std::invalid_argument("unknown argument " + arg +
                                  " (--device cpu|cuda, GoogleTest flags)");
    }
  }
  g_world = dist::init_mpi_world();
  if (g_device.is_cuda() && !moe::test::have_gpu()) {
    std::fprintf(stderr, "moe_mpi_training_tests: --device cuda, but there is no CUDA device\n");
    return 1;
  }
  register_cases(g_world->size());

  const int status = dist::test::run_tests_on_ranks(*g_world, "moe_mpi_training_tests");
  g_world.reset();
  return status;
}

}  // namespace
}  // namespace moe::train::test

int main(int argc, char** argv) {
  try {
    return moe::train::test::run(argc, argv);
  } catch (const std::exception& e) {
    if (moe::dist::report_and_abort(e)) return 1;
    std::fprintf(stderr, "moe_mpi_training_tests: error: %s\n", e.what());
    return 1;
  }
}
