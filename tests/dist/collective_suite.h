// One suite of collective and point-to-point cases for every ProcessGroup backend: each case is
// a function of a group and a device that every rank runs, checking its results (GoogleTest
// EXPECTs, naming the rank) against values computed on the host from every rank's inputs, which
// every rank can draw. Reductions are expected bitwise: the backends reduce in rank order
// 0, 1, 2, ... accumulating bf16/f16 in fp32, avg = sum / size (integer division for integers).
//
// Runners: Local threads, world sizes 1 to 4 (collective_suite_local_test.cpp); MPI processes
// under mpirun, host or CUDA tensors (mpi_collectives_main.cpp). A case only uses EXPECTs (never
// ASSERTs), so a failed check never leaves the ranks calling different collectives.
#pragma once

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "moe/dist/process_group.h"

namespace moe::dist::test {

struct SuiteCase {
  const char* name;
  void (*run)(ProcessGroup& group, Device device);
  // The case makes a call disagree across ranks, or fail on one rank, on purpose: it needs a
  // backend that checks calls across ranks (Local; MPI with call checks). Ends with a group
  // that may be unusable (Local aborts its world): run it last on a group.
  bool breaks_calls = false;
};

// Every case, in the order a runner should run them on one group (those that break calls last).
const std::vector<SuiteCase>& collective_suite();

// GoogleTest prints a parameter by its name.
inline void PrintTo(const SuiteCase& c, std::ostream* out) { *out << c.name; }

// A case in a world of its own, for the runners with ranks as threads (Local backend): every
// case on 1, 2, 3 and 4 ranks, named "<case>_world<N>".
struct LocalSuiteParam {
  SuiteCase suite_case;
  int world;
};
inline void PrintTo(const LocalSuiteParam& p, std::ostream* out) {
  *out << p.suite_case.name << " on " << p.world << " ranks";
}
std::vector<LocalSuiteParam> local_suite_params();

// For the runners with ranks as processes: every rank's failures on stderr, prefixed with its
// rank (only rank 0 keeps GoogleTest's own report). The test's name is kept from OnTestStart:
// GoogleTest holds its own lock while it reports a part result, so asking it for the current
// test there would deadlock.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestStart(const ::testing::TestInfo& test) override;
  void OnTestPartResult(const ::testing::TestPartResult& result) override;

 private:
  int rank_;
  std::string test_ = "?";
};

// RUN_ALL_TESTS on every rank of a process runner: an exception escaping a test ends the job
// (the other ranks would wait for this one), rank 0 alone keeps GoogleTest's report, every
// rank's failures print prefixed with its rank (RankFailurePrinter), and every rank returns the
// same status: 1 when any rank failed ("<program>: FAILED ..." on each failing rank). The status
// is agreed with an all-reduce of a tensor on `device` (NCCL needs a device tensor).
int run_tests_on_ranks(ProcessGroup& world, const std::string& program,
                       Device device = Device::cpu());
std::string local_suite_param_name(const LocalSuiteParam& p);

}  // namespace moe::dist::test
