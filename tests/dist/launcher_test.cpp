// launch_ranks (the process side of `moe launch`) with /bin/sh scripts as the ranks: the
// variables each rank gets (and the user's left alone), a failing or signalled rank ending the
// others within seconds, a rank that ignores SIGTERM killed after the grace period, SIGTERM to
// the launcher passed on to the ranks, a program that cannot run, option errors. Each case runs
// the launcher in a forked copy of this test (it installs signal handlers) and reads its log;
// afterwards no rank's pid is left.
#include "moe/dist/launcher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "moe/core/error.h"

namespace moe::dist {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct LauncherRun {
  int exit_code = -1;  // the launcher's
  std::string log;     // what it printed
  std::vector<int> pids;
  double seconds = 0;
};

// Runs launch_ranks(options) in a forked process; `during(launcher_pid)` runs meanwhile.
LauncherRun run_launcher(const LaunchOptions& options,
                         const std::function<void(pid_t)>& during = nullptr) {
  int pipe_fds[2];
  EXPECT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  const auto start = Clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    std::FILE* log = ::fdopen(pipe_fds[1], "w");
    int code = 99;
    try {
      code = launch_ranks(options, log).exit_code;
    } catch (const std::exception& e) {
      std::fprintf(log, "error: %s\n", e.what());
    }
    std::fflush(log);
    ::_exit(code);
  }
  ::close(pipe_fds[1]);
  if (during) during(pid);
  LauncherRun run;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buf, sizeof(buf))) > 0)
    run.log.append(buf, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const size_t at = run.log.find("; pids");
  if (at != std::string::npos) {
    std::istringstream in(run.log.substr(at + 6, run.log.find('\n', at) - at - 6));
    for (int p; in >> p;) run.pids.push_back(p);
  }
  return run;
}

// Running (a zombie left for a parent that does not reap it counts as ended).
bool alive(int pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  return paren == std::string::npos || paren + 2 >= text.size() || text[paren + 2] != 'Z';
}

LaunchOptions shell(int nproc, const std::string& script) {
  LaunchOptions o;
  o.nproc_per_node = nproc;
  o.program = "/bin/sh";
  o.argv0 = "sh";
  o.args = {"-c", script};
  o.grace = 500ms;
  return o;
}

class Launcher : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moe_launcher_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string read(const std::string& name) const {
    std::ifstream in(dir_ / name);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  void expect_all_gone(const LauncherRun& run) const {
    for (int pid : run.pids) EXPECT_FALSE(alive(pid)) << "pid " << pid << " is still running";
  }
  fs::path dir_;
};

TEST_F(Launcher, SetsTorchrunVariablesAndKeepsTheUsersEnvironment) {
  ::setenv("MOE_LAUNCHER_TEST_USER_VAR", "kept", 1);
  ::unsetenv("NCCL_NVLS_ENABLE");
  LaunchOptions o = shell(2,
                          "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $GROUP_RANK "
                          "$MASTER_ADDR $MASTER_PORT $MOE_LAUNCHER_TEST_USER_VAR "
                          "${NCCL_NVLS_ENABLE-unset} $0\" > " +
                              dir_.string() + "/rank.$RANK");
  o.nnodes = 3;
  o.node_rank = 1;
  o.master_addr = "node-a";
  o.master_port = 29555;
  const LauncherRun run = run_launcher(o);
  ::unsetenv("MOE_LAUNCHER_TEST_USER_VAR");
  EXPECT_EQ(run.exit_code, 0) << run.log;
  EXPECT_EQ(read("rank.2"), "2 6 0 2 1 node-a 29555 kept unset sh\n");
  EXPECT_EQ(read("rank.3"), "3 6 1 2 1 node-a 29555 kept unset sh\n");
  EXPECT_FALSE(fs::exists(dir_ / "rank.0"));
  EXPECT_NE(run.log.find("moe launch: ranks 2..3 of 6 on this node (node 1 of 3), master "
                         "node-a:29555; pids"),
            std::string::npos)
      << run.log;
  EXPECT_EQ(run.pids.size(), 2u);
  expect_all_gone(run);
}

TEST_F(Launcher, OneNodePicksAFreePort) {
  const LauncherRun run =
      run_launcher(shell(1, "echo $MASTER_ADDR:$MASTER_PORT > " + dir_.string() + "/a"));
  EXPECT_EQ(run.exit_code, 0) << run.log;
  const std::string addr = read("a");
  EXPECT_EQ(addr.rfind("127.0.0.1:", 0), 0u) << addr;
  EXPECT_GT(std::stoi(addr.substr(10)), 0);
}

TEST_F(Launcher, FailingRankEndsTheOthers) {
  // Rank 1 fails at once; the others would run for a minute.
  const LauncherRun run =
      run_launcher(shell(3, "if [ $RANK = 1 ]; then exit 3; fi; exec sleep 60"));
  EXPECT_EQ(run.exit_code, 3) << run.log;
  ASSERT_EQ(run.pids.size(), 3u) << run.log;
  EXPECT_NE(run.log.find("moe launch: rank 1 (pid " + std::to_string(run.pids[1]) +
                         ") exited with status 3; ended the other ranks"),
            std::string::npos)
      << run.log;
  EXPECT_LT(run.seconds, 10.0);
  expect_all_gone(run);
}

TEST_F(Launcher, SignalledRankIsNamed) {
  const LauncherRun run =
      run_launcher(shell(3, "if [ $RANK = 2 ]; then kill -SEGV $$; fi; exec sleep 60"));
  EXPECT_EQ(run.exit_code, 128 + SIGSEGV) << run.log;
  EXPECT_NE(run.log.find("moe launch: rank 2 (pid "), std::string::npos) << run.log;
  EXPECT_NE(run.log.find(") was killed by signal SIGSEGV; ended the other ranks"),
            std::string::npos)
      << run.log;
  expect_all_gone(run);
}

TEST_F(Launcher, RankIgnoringSigtermIsKilledAfterTheGracePeriod) {
  // Ranks 0 and 2 ignore SIGTERM (and start a child of their own); rank 1 fails after 0.2 s.
  const LauncherRun run =
      run_launcher(shell(3,
                         "if [ $RANK = 1 ]; then sleep 0.2; exit 1; fi; trap '' TERM; "
                         "sleep 60 & echo $! > " +
                             dir_.string() + "/child.$RANK; while :; do sleep 0.05; done"));
  EXPECT_EQ(run.exit_code, 1) << run.log;
  EXPECT_NE(run.log.find("moe launch: rank 1 (pid "), std::string::npos) << run.log;
  EXPECT_GE(run.seconds, 0.5);  // the grace period
  EXPECT_LT(run.seconds, 10.0);
  expect_all_gone(run);
  // What the ranks started went with them (their process groups).
  std::this_thread::sleep_for(100ms);
  for (const char* f : {"child.0", "child.2"}) {
    const std::string pid = read(f);
    ASSERT_FALSE(pid.empty()) << f;
    EXPECT_FALSE(alive(std::stoi(pid))) << f << " " << pid;
  }
}

TEST_F(Launcher, PassesSigtermOnToTheRanks) {
  const std::string d = dir_.string();
  const LauncherRun run =
      run_launcher(shell(2, "trap 'echo TERM > " + d + "/term.$RANK; exit 0' TERM; touch " + d +
                                "/ready.$RANK; while :; do sleep 0.05; done"),
                   [&](pid_t launcher) {
                     const auto deadline = Clock::now() + 10s;
                     while (!(fs::exists(dir_ / "ready.0") && fs::exists(dir_ / "ready.1")) &&
                            Clock::now() < deadline)
                       std::this_thread::sleep_for(20ms);
                     ::kill(launcher, SIGTERM);
                   });
  EXPECT_EQ(run.exit_code, 128 + SIGTERM) << run.log;
  EXPECT_EQ(read("term.0"), "TERM\n");
  EXPECT_EQ(read("term.1"), "TERM\n");
  EXPECT_NE(run.log.find("moe launch: got SIGTERM; passed it on to the ranks"), std::string::npos)
      << run.log;
  expect_all_gone(run);
}

TEST_F(Launcher, ProgramThatCannotRun) {
  LaunchOptions o;
  o.nproc_per_node = 2;
  o.program = (dir_ / "no-such-program").string();
  o.grace = 500ms;
  const LauncherRun run = run_launcher(o);
  EXPECT_EQ(run.exit_code, 127) << run.log;
  EXPECT_NE(run.log.find(") exited with status 127"), std::string::npos) << run.log;
  expect_all_gone(run);
}

TEST(LauncherOptions, ErrorsNameTheFlag) {
  const auto expect_error = [](LaunchOptions o, const char* part) {
    try {
      launch_ranks(o, nullptr);
      ADD_FAILURE() << "no error for " << part;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  LaunchOptions o = shell(0, "true");
  expect_error(o, "--nproc-per-node must be at least 1");
  o = shell(2, "true");
  o.nnodes = 2;
  o.node_rank = 2;
  o.master_port = 29500;
  expect_error(o, "--node-rank 2 is not in [0, --nnodes 2)");
  o.node_rank = 0;
  o.master_port = 0;
  expect_error(o, "--master-port is needed with --nnodes > 1");
  o.master_port = 70000;
  expect_error(o, "--master-port 70000");
}

TEST(LauncherOptions, SignalNames) {
  EXPECT_EQ(signal_name(SIGKILL), "SIGKILL");
  EXPECT_EQ(signal_name(SIGSEGV), "SIGSEGV");
}

}  // namespace
}  // namespace moe::dist
