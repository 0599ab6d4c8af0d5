// launch_ranks (the process side of `moe launch`) with /bin/sh scripts as the ranks: the
// variables each rank gets (and the user's left alone), a failing or signalled rank ending the
// others within seconds, a rank that ignores SIGTERM killed after the grace period, SIGTERM to
// the launcher passed on to the ranks, a program that cannot run, option errors. Each case runs
// the launcher in a forked copy of this test (it installs signal handlers) and reads its log;
// afterwards no rank's pid is left.
//
// Then `moe launch` end to end, with the `moe` program built beside this test binary and the
// failure hook of dist/init.h: a rank failing before or after the rendezvous, or never arriving,
// ends the whole job within seconds (or at the rendezvous timeout), the launcher names the rank,
// every rank's error carries its "[rank R host]" prefix, and no rank is left. Under mpirun (when
// it is installed): `moe bench comm` on the MPI backend, and `moe train` refusing a world of
// two after the start-up lines.
#include "moe/dist/launcher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
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

// ---- `moe launch` and `moe` under mpirun, end to end -----------------------------------------

// The `moe` program of this build: build/<preset>/moe beside build/<preset>/tests/.
fs::path moe_program() {
  return fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "moe";
}

struct Command {
  int exit_code = -1;
  std::string output;  // stdout and stderr, the launcher's and every rank's
  double seconds = 0;
  std::vector<int> pids;  // the ranks', from `moe launch`'s first line
};

// Runs `program args...` with `env` added; gives up (and kills it) after `limit`. Returns once
// the output is closed, which is when every rank (they all hold it) has ended.
Command run_command(const std::string& program, const std::vector<std::string>& args,
                    const std::map<std::string, std::string>& env,
                    std::chrono::seconds limit = 60s) {
  int pipe_fds[2];
  EXPECT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  std::vector<std::string> argv_strings{program};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  const auto start = Clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    ::dup2(pipe_fds[1], 1);
    ::dup2(pipe_fds[1], 2);
    ::execvp(program.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  Command c;
  char buf[4096];
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(start + limit - Clock::now());
    if (left.count() <= 0) {
      ADD_FAILURE() << "still running after " << limit.count() << " s; output so far:\n"
                    << c.output;
      ::kill(pid, SIGKILL);  // its ranks die with it (PR_SET_PDEATHSIG)
      break;
    }
    pollfd p{pipe_fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::read(pipe_fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    c.output.append(buf, static_cast<size_t>(n));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  c.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const size_t at = c.output.find("; pids");
  if (at != std::string::npos) {
    std::istringstream in(c.output.substr(at + 6, c.output.find('\n', at) - at - 6));
    for (int q; in >> q;) c.pids.push_back(q);
  }
  return c;
}

class MoeLaunch : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(moe_program())) << moe_program() << " is missing: build the moe target";
  }
  Command launch(const std::vector<std::string>& args,
                 const std::map<std::string, std::string>& env) {
    std::vector<std::string> all{"launch", "--nproc-per-node", "3", "--grace-seconds", "2"};
    all.insert(all.end(), args.begin(), args.end());
    return run_command(moe_program().string(), all, env);
  }
  static void expect_has(const Command& c, const std::string& part) {
    EXPECT_NE(c.output.find(part), std::string::npos) << "missing '" << part << "' in:\n"
                                                      << c.output;
  }
  static void expect_all_gone(const Command& c) {
    ASSERT_EQ(c.pids.size(), 3u) << c.output;
    for (int pid : c.pids) EXPECT_FALSE(alive(pid)) << "rank pid " << pid << " is still running";
  }
};

TEST_F(MoeLaunch, RankFailingBeforeTheRendezvousEndsTheJob) {
  const Command c = launch({"bench", "comm", "--max-size", "4K"}, {{"MOE_TEST_FAIL_RANK", "1"}});
  EXPECT_NE(c.exit_code, 0) << c.output;
  expect_has(c, "] error: MOE_TEST_FAIL_RANK=1: rank 1 fails before the rendezvous");
  expect_has(c, "[rank 1 ");
  ASSERT_EQ(c.pids.size(), 3u) << c.output;
  expect_has(c, "moe launch: rank 1 (pid " + std::to_string(c.pids[1]) +
                    ") exited with status 1; ended the other ranks");
  EXPECT_LT(c.seconds, 20.0);
  expect_all_gone(c);
}

TEST_F(MoeLaunch, RankFailingAfterTheRendezvousEndsTheJob) {
  const Command c = launch({"bench", "comm", "--max-size", "4K"},
                           {{"MOE_TEST_FAIL_RANK", "1"}, {"MOE_TEST_FAIL_AT", "after-rendezvous"}});
  EXPECT_NE(c.exit_code, 0) << c.output;
  expect_has(c, "MOE_TEST_FAIL_RANK=1: rank 1 fails after the rendezvous");
  expect_has(c, "moe launch: rank ");
  EXPECT_LT(c.seconds, 20.0);
  expect_all_gone(c);
}

TEST_F(MoeLaunch, RankThatNeverArrivesEndsAtTheTimeout) {
  // --distributed-timeout-minutes 0.03: 1.8 s.
  const Command c =
      launch({"bench", "comm", "--max-size", "4K", "--distributed-timeout-minutes", "0.03"},
             {{"MOE_TEST_FAIL_RANK", "1"}, {"MOE_TEST_FAIL_AT", "hang"}});
  EXPECT_NE(c.exit_code, 0) << c.output;
  expect_has(c, "timed out after 1.8 s: 2 of 3 ranks arrived (missing: rank 1)");
  expect_has(c, "] error: rendezvous at 127.0.0.1:");
  expect_has(c, "; ended the other ranks");
  EXPECT_GE(c.seconds, 1.5);
  EXPECT_LT(c.seconds, 30.0);
  expect_all_gone(c);
}

TEST_F(MoeLaunch, LaunchNeedsASubcommand) {
  const Command c = run_command(moe_program().string(), {"launch", "--nproc-per-node", "2"}, {});
  EXPECT_EQ(c.exit_code, 1) << c.output;
  expect_has(c, "moe launch: give the subcommand the ranks run");
}

TEST_F(MoeLaunch, BenchCommInOneProcess) {
  const Command c = run_command(moe_program().string(),
                                {"--cpu", "bench", "comm", "--max-size", "8K", "--iters", "2",
                                 "--warmup", "1", "--dtype", "bf16"},
                                {});
  EXPECT_EQ(c.exit_code, 0) << c.output;
  expect_has(c, "distributed: world size 1 = TP 1 x CP 1 x DP 1 x PP 1");
  expect_has(c, "backend local");
  for (const char* op :
       {"all_reduce", "all_gather", "reduce_scatter", "all_to_all", "all_to_all_v"})
    expect_has(c, op);
  expect_has(c, "8 KiB");
  EXPECT_EQ(c.output.find("wrong"), std::string::npos) << c.output;
}

// mpirun, when it is installed (OpenMPI), and the settings CI's containers need: root, ranks
// that yield while they wait (2 cores), no single-copy transport (it needs ptrace).
std::string find_mpirun() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');)
    if (!dir.empty() && fs::exists(fs::path(dir) / "mpirun"))
      return (fs::path(dir) / "mpirun").string();
  return "";
}

const std::map<std::string, std::string> kMpiEnv{
    {"OMPI_ALLOW_RUN_AS_ROOT", "1"},
    {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
    {"OMPI_MCA_mpi_yield_when_idle", "1"},
    {"OMPI_MCA_btl_vader_single_copy_mechanism", "none"}};

// `mpirun -np 2 moe <args>`.
Command mpirun_moe(const std::string& mpirun, const std::vector<std::string>& args) {
  std::vector<std::string> all{"--allow-run-as-root", "--oversubscribe", "-np", "2",
                               moe_program().string()};
  all.insert(all.end(), args.begin(), args.end());
  return run_command(mpirun, all, kMpiEnv);
}

TEST_F(MoeLaunch, BenchCommUnderMpirun) {
  const std::string mpirun = find_mpirun();
  if (mpirun.empty()) GTEST_SKIP() << "mpirun is not installed";
  const fs::path jsonl =
      fs::temp_directory_path() / ("moe_comm_test_" + std::to_string(::getpid()) + ".jsonl");
  fs::remove(jsonl);
  // On the CPU: the MPI backend, also on a machine with GPUs.
  const Command c =
      mpirun_moe(mpirun, {"bench", "comm", "--device", "cpu", "--max-size", "64K", "--iters", "2",
                          "--warmup", "1", "--jsonl", jsonl.string()});
  if (c.output.find("this build has no MPI") != std::string::npos)
    GTEST_SKIP() << "this build has no MPI";
  EXPECT_EQ(c.exit_code, 0) << c.output;
  expect_has(c, "distributed: world size 2");
  expect_has(c, "backend mpi, launcher openmpi");
  expect_has(c, "all_to_all_v");
  expect_has(c, "64 KiB");
  EXPECT_EQ(c.output.find("wrong"), std::string::npos) << c.output;
  // One JSON line per op and size: 5 ops x 7 sizes (1 KiB .. 64 KiB), from rank 0 only.
  std::ifstream in(jsonl);
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    EXPECT_NE(line.find("\"world_size\":2"), std::string::npos) << line;
    EXPECT_NE(line.find("\"check\":\"ok\""), std::string::npos) << line;
  }
  EXPECT_EQ(lines, 35);
  fs::remove(jsonl);
}

// A mapping the world cannot hold is refused by every rank after the start-up line. (Training
// on several ranks itself: train/mpi_train_parity_test.sh.)
TEST_F(MoeLaunch, TrainRefusesAMappingTheWorldCannotHoldAfterTheStartUpLine) {
  const std::string mpirun = find_mpirun();
  if (mpirun.empty()) GTEST_SKIP() << "mpirun is not installed";
  const Command c = mpirun_moe(mpirun, {"--cpu", "train", "--lr", "3e-3", "--train-iters", "1",
                                        "--expert-model-parallel-size", "4"});
  if (c.output.find("this build has no MPI") != std::string::npos)
    GTEST_SKIP() << "this build has no MPI";
  EXPECT_NE(c.exit_code, 0) << c.output;
  expect_has(c, "distributed: world size 2 = TP 1 x CP 1 x DP 2 x PP 1");
  expect_has(c,
             "] error: --expert-tensor-parallel-size 1 x --expert-model-parallel-size 4 = 4 "
             "ranks per expert group does not divide the world size 2");
  // (Which comes first in the output is mpirun's business: it forwards stdout and stderr apart.)
}

// Processes whose command line holds `marker` (ranks left running).
int processes_holding(const std::string& marker) {
  int count = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::ifstream in(e.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    count += cmdline.find(marker) != std::string::npos ? 1 : 0;
  }
  return count;
}

// `moe bench comm` under mpirun on `ranks` ranks, rank 1 stopping at `fail_at` (init.h), with a
// timeout of 0.03 min (1.8 s); empty when mpirun or MPI is missing. The ranks write a file named
// `marker`, by which the test finds any still running.
std::optional<Command> mpi_job_with_a_hanging_rank(int ranks, const char* fail_at,
                                                   const std::string& marker) {
  const std::string mpirun = find_mpirun();
  if (mpirun.empty()) return std::nullopt;
  Command c =
      run_command(mpirun,
                  {"--allow-run-as-root", "--oversubscribe", "-np", std::to_string(ranks), "-x",
                   "MOE_TEST_FAIL_RANK=1", "-x", std::string("MOE_TEST_FAIL_AT=") + fail_at,
                   moe_program().string(), "bench", "comm", "--device", "cpu", "--max-size", "4K",
                   "--distributed-timeout-minutes", "0.03", "--jsonl",
                   (fs::temp_directory_path() / marker).string()},
                  kMpiEnv, 40s);
  if (c.output.find("this build has no MPI") != std::string::npos) return std::nullopt;
  return c;
}

// That no process of the job named by `marker` is left (mpirun ended the hanging rank too).
void expect_no_rank_left(const std::string& marker) {
  int left = processes_holding(marker);
  for (int i = 0; i < 20 && left > 0; ++i) {
    std::this_thread::sleep_for(100ms);
    left = processes_holding(marker);
  }
  EXPECT_EQ(left, 0) << "a rank of the job is still running";
}

// MPI has no timeout: a rank that never calls MPI_Init hung the others in it for good. They now
// end at --distributed-timeout-minutes, and mpirun ends the job, the hanging rank included.
TEST_F(MoeLaunch, RankThatNeverArrivesUnderMpirunEndsAtTheTimeout) {
  const std::string marker = "moe_mpi_hang_" + std::to_string(::getpid()) + ".jsonl";
  const std::optional<Command> c = mpi_job_with_a_hanging_rank(2, "hang", marker);
  if (!c) GTEST_SKIP() << "no mpirun or no MPI in this build";
  EXPECT_NE(c->exit_code, 0) << c->output;
  expect_has(*c, "[rank 0 ");
  expect_has(*c, "] error: the MPI rendezvous (MPI_Init) timed out after 1.8 s: not all 2 ranks");
  EXPECT_LT(c->seconds, 30.0);
  expect_no_rank_left(marker);
}

// A rank that stops after the rendezvous leaves the others waiting in their first collective:
// MPI has no timeout, so the backend's watchdog (call_watchdog.h) ends them at
// --distributed-timeout-minutes, naming the call, and mpirun ends the job.
TEST_F(MoeLaunch, CollectiveThatARankNeverJoinsUnderMpirunEndsAtTheTimeout) {
  const std::string marker = "moe_mpi_collective_hang_" + std::to_string(::getpid()) + ".jsonl";
  const std::optional<Command> c = mpi_job_with_a_hanging_rank(3, "hang-after-rendezvous", marker);
  if (!c) GTEST_SKIP() << "no mpirun or no MPI in this build";
  EXPECT_NE(c->exit_code, 0) << c->output;
  expect_has(*c, "did not complete in 1.8 s (--distributed-timeout-minutes)");
  expect_has(*c, "on the group of world ranks 0-2");
  EXPECT_LT(c->seconds, 30.0);
  expect_no_rank_left(marker);
}

}  // namespace
}  // namespace moe::dist
