// moe_mpi_tests: the backend suite (collective_suite.h) on the MPI backend, one rank per process:
//   mpirun --allow-run-as-root --oversubscribe -np 4 moe_mpi_tests [--device cuda] [gtest flags]
// Every rank runs every case on the world group (host tensors, or with --device cuda tensors on
// GPU 0, which the ranks share), then the cases again with a message limit of 61 bytes, so
// that every transfer is split into pieces and collectives run as point-to-point pieces. Rank 0
// prints GoogleTest's report; every rank prints its failures prefixed "[rank R]". The job exits
// non-zero when any rank failed. An exception that escapes a case ends the job through
// dist::report_and_abort, naming the rank.
//
// Faults (tests/dist/mpi_fault_test.sh checks that the job ends, fast, naming the rank):
//   --fault throw-before     the last rank throws before a collective the others are in
//   --fault bad-argument     the last rank passes a bad output shape (call checks on: every
//                            rank throws)
//   --fault bad-argument-unchecked   the same with MOE_MPI_CHECK_CALLS=0: only the last rank
//                            throws; the others wait in MPI until the job is aborted
#include <gtest/gtest.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "collective_suite.h"
#include "common/check.h"
#include "moe/dist/fatal.h"
#include "moe/dist/mpi_backend.h"

namespace moe::dist::test {
namespace {

std::shared_ptr<ProcessGroup> g_world;
Device g_device = Device::cpu();

bool call_checks_on() {
  const char* v = std::getenv("MOE_MPI_CHECK_CALLS");
  return v == nullptr ||
         (std::strcmp(v, "0") != 0 && std::strcmp(v, "off") != 0 && std::strcmp(v, "false") != 0);
}

class MpiSuite : public ::testing::TestWithParam<SuiteCase> {};

void run_case(const SuiteCase& c) {
  if (c.breaks_calls && !call_checks_on()) GTEST_SKIP() << "needs call checks";
  c.run(*g_world, g_device);
}

TEST_P(MpiSuite, Case) {
  run_case(GetParam());
}

// The same with every message split into pieces of at most 61 bytes.
TEST_P(MpiSuite, SmallMessages) {
  const size_t previous = mpi_message_limit();
  set_mpi_message_limit(61);
  run_case(GetParam());
  set_mpi_message_limit(previous);
}

INSTANTIATE_TEST_SUITE_P(Mpi, MpiSuite, ::testing::ValuesIn(collective_suite()),
                         [](const ::testing::TestParamInfo<SuiteCase>& info) {
                           return std::string(info.param.name);
                         });

int run_fault(const std::string& fault) {
  ProcessGroup& world = *g_world;
  const int last = world.size() - 1;
  if (fault == "throw-before") {
    if (world.rank() == last) throw std::runtime_error("injected failure before a collective");
    Tensor t = Tensor::full({4}, 1.0, DType::f32);
    world.all_reduce(t);  // never completes: the last rank does not come
    return 0;
  }
  if (fault == "bad-argument" || fault == "bad-argument-unchecked") {
    Tensor in = Tensor::zeros({2, 3}, DType::f32);
    Tensor out = Tensor::zeros({2 * world.size() - (world.rank() == last ? 1 : 0), 3}, DType::f32);
    world.all_gather(in, out);
    return 0;
  }
  throw std::invalid_argument("unknown --fault " + fault +
                              " (throw-before, bad-argument, bad-argument-unchecked)");
}

int run(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::string fault;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--device" && i + 1 < argc) {
      const std::string device = argv[++i];
      if (device == "cuda") {
        g_device = Device::cuda(0);
      } else if (device != "cpu") {
        throw std::invalid_argument("--device " + device + ": expected cpu or cuda");
      }
    } else if (arg == "--fault" && i + 1 < argc) {
      fault = argv[++i];
    } else {
      throw std::invalid_argument("unknown argument " + arg +
                                  " (--device cpu|cuda, --fault KIND, GoogleTest flags)");
    }
  }
  if (fault == "bad-argument-unchecked") setenv("MOE_MPI_CHECK_CALLS", "0", 1);
  g_world = init_mpi_world();
  if (!fault.empty()) return run_fault(fault);
  if (g_device.is_cuda() && !moe::test::have_gpu()) {
    std::fprintf(stderr, "moe_mpi_tests: --device cuda, but there is no CUDA device\n");
    return 1;
  }

  const int status = run_tests_on_ranks(*g_world, "moe_mpi_tests");
  g_world.reset();
  return status;
}

}  // namespace
}  // namespace moe::dist::test

int main(int argc, char** argv) {
  try {
    return moe::dist::test::run(argc, argv);
  } catch (const std::exception& e) {
    if (moe::dist::report_and_abort(e)) return 1;
    std::fprintf(stderr, "moe_mpi_tests: error: %s\n", e.what());
    return 1;
  }
}
