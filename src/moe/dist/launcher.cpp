#include "moe/dist/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <map>
#include <sstream>

#include "moe/core/error.h"
#include "moe/dist/launch_env.h"
#include "moe/dist/tcp_store.h"

namespace moe::dist {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP};

// Signals reach the loop through a pipe (the handler only writes the number).
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_signal(int sig) {
  const int saved = errno;
  const unsigned char c = static_cast<unsigned char>(sig);
  (void)!::write(g_signal_pipe[1], &c, 1);
  errno = saved;
}

// Installs the handlers; restores the previous ones when it goes out of scope.
class SignalForwarding {
 public:
  SignalForwarding() {
    MOE_CHECK(::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) == 0,
              "moe launch: pipe: ", std::strerror(errno));
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (size_t i = 0; i < std::size(kForwarded); ++i)
      ::sigaction(kForwarded[i], &action, &previous_[i]);
    // SIGCHLD only wakes the loop: the first rank to end is seen before the ranks it takes
    // down with it, so the report names the rank that failed first.
    action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    ::sigaction(SIGCHLD, &action, &previous_child_);
  }
  ~SignalForwarding() {
    ::sigaction(SIGCHLD, &previous_child_, nullptr);
    for (size_t i = 0; i < std::size(kForwarded); ++i)
      ::sigaction(kForwarded[i], &previous_[i], nullptr);
    ::close(g_signal_pipe[0]);
    ::close(g_signal_pipe[1]);
    g_signal_pipe[0] = g_signal_pipe[1] = -1;
  }
  SignalForwarding(const SignalForwarding&) = delete;
  SignalForwarding& operator=(const SignalForwarding&) = delete;

  // The signals to pass on received since the last call, waiting at most `timeout_ms` for a
  // signal (SIGCHLD included, which is not returned).
  std::vector<int> take(int timeout_ms) {
    pollfd p{g_signal_pipe[0], POLLIN, 0};
    ::poll(&p, 1, timeout_ms);
    std::vector<int> signals;
    unsigned char buf[64];
    ssize_t n;
    while ((n = ::read(g_signal_pipe[0], buf, sizeof(buf))) > 0)
      for (ssize_t i = 0; i < n; ++i)
        if (buf[i] != SIGCHLD) signals.push_back(buf[i]);
    return signals;
  }

 private:
  struct sigaction previous_[std::size(kForwarded)];
  struct sigaction previous_child_;
};

struct Child {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
  int status = 0;  // waitpid's, once ended
};

void check_options(const LaunchOptions& o) {
  MOE_CHECK(o.nproc_per_node >= 1, "--nproc-per-node must be at least 1, got ", o.nproc_per_node);
  MOE_CHECK(o.nnodes >= 1, "--nnodes must be at least 1, got ", o.nnodes);
  MOE_CHECK(o.node_rank >= 0 && o.node_rank < o.nnodes, "--node-rank ", o.node_rank,
            " is not in [0, --nnodes ", o.nnodes, ")");
  MOE_CHECK(static_cast<int64_t>(o.nproc_per_node) * o.nnodes <= INT32_MAX,
            "--nproc-per-node x --nnodes is too large");
  MOE_CHECK(o.master_port >= 0 && o.master_port <= 65535, "--master-port ", o.master_port,
            " is not a TCP port (1 .. 65535)");
  MOE_CHECK(o.master_port != 0 || o.nnodes == 1,
            "--master-port is needed with --nnodes > 1 (the same on every node)");
  MOE_CHECK(!o.master_addr.empty(), "--master-addr is empty");
  MOE_CHECK(!o.program.empty(), "moe launch: no program to run");
  MOE_CHECK(o.grace.count() >= 0, "moe launch: negative grace period");
}

// "NAME=value" strings for execve: the current environment with `overrides` replacing or adding.
std::vector<std::string> child_environment(const std::map<std::string, std::string>& overrides) {
  EnvMap env = current_environment();
  for (const auto& [k, v] : overrides) env[k] = v;
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> p;
  for (std::string& s : strings) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

// Starts one rank. The child only makes async-signal-safe calls before execve.
pid_t start_child(const std::string& program, std::vector<char*>& argv, std::vector<char*>& envp,
                  pid_t launcher) {
  sigset_t none;
  sigemptyset(&none);
  const pid_t pid = ::fork();
  MOE_CHECK(pid >= 0, "moe launch: fork: ", std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != launcher) ::_exit(1);  // the launcher is already gone
    for (int sig : kForwarded) ::signal(sig, SIG_DFL);
    ::signal(SIGCHLD, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(program.c_str(), argv.data(), envp.data());
    const char* what = "moe launch: cannot execute the rank's program: ";
    (void)!::write(2, what, std::strlen(what));
    (void)!::write(2, program.c_str(), program.size());
    (void)!::write(2, "\n", 1);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: whichever runs first
  return pid;
}

// Signals a child's process group (the child and whatever it started).
void signal_group(const Child& c, int sig) {
  ::kill(-c.pid, sig);
}

std::string describe_end(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + signal_name(WTERMSIG(status));
  return "ended (status " + std::to_string(status) + ")";
}

bool failed(int status) {
  return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

std::string signal_name(int signal) {
  const char* abbrev = ::sigabbrev_np(signal);
  if (abbrev) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(signal);
}

LaunchResult launch_ranks(const LaunchOptions& options, std::FILE* log) {
  check_options(options);
  LaunchOptions o = options;
  if (o.master_port == 0) o.master_port = find_free_port();
  std::string program = o.program;
  if (program == "/proc/self/exe") {
    char path[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
    MOE_CHECK(n > 0, "moe launch: cannot read /proc/self/exe: ", std::strerror(errno));
    program.assign(path, static_cast<size_t>(n));
  }
  const int world = o.nproc_per_node * o.nnodes;
  const int first = o.node_rank * o.nproc_per_node;

  // Everything the children need, made before the first fork.
  std::vector<std::string> argv_strings{o.argv0.empty() ? program : o.argv0};
  argv_strings.insert(argv_strings.end(), o.args.begin(), o.args.end());
  std::vector<char*> argv = pointers(argv_strings);
  std::vector<std::vector<std::string>> env_strings;
  for (int local = 0; local < o.nproc_per_node; ++local) {
    env_strings.push_back(child_environment({{"RANK", std::to_string(first + local)},
                                             {"WORLD_SIZE", std::to_string(world)},
                                             {"LOCAL_RANK", std::to_string(local)},
                                             {"LOCAL_WORLD_SIZE", std::to_string(o.nproc_per_node)},
                                             {"GROUP_RANK", std::to_string(o.node_rank)},
                                             {"MASTER_ADDR", o.master_addr},
                                             {"MASTER_PORT", std::to_string(o.master_port)}}));
  }

  LaunchResult result;
  SignalForwarding signals;
  std::vector<Child> children;
  const pid_t self = ::getpid();
  for (int local = 0; local < o.nproc_per_node; ++local) {
    std::vector<char*> envp = pointers(env_strings[static_cast<size_t>(local)]);
    Child c;
    c.rank = first + local;
    try {
      c.pid = start_child(program, argv, envp, self);
    } catch (...) {
      for (const Child& started : children) signal_group(started, SIGKILL);
      for (const Child& started : children) ::waitpid(started.pid, nullptr, 0);
      throw;
    }
    c.running = true;
    children.push_back(c);
    result.pids.push_back(c.pid);
  }
  if (log) {
    std::ostringstream line;
    line << "moe launch: ranks " << first << ".." << first + o.nproc_per_node - 1 << " of " << world
         << " on this node (node " << o.node_rank << " of " << o.nnodes << "), master "
         << o.master_addr << ":" << o.master_port << "; pids";
    for (const Child& c : children) line << " " << c.pid;
    std::fprintf(log, "%s\n", line.str().c_str());
    std::fflush(log);
  }

  int running = static_cast<int>(children.size());
  bool ending = false;  // the others are being ended (a failure or a signal)
  Clock::time_point kill_at = Clock::time_point::max();
  const auto end_others = [&](int sig) {
    for (const Child& c : children)
      if (c.running) signal_group(c, sig);
  };
  while (running > 0) {
    for (int sig : signals.take(100)) {
      if (result.signal != 0 || result.failed_rank >= 0) {
        end_others(SIGKILL);  // a second signal: no more waiting
        continue;
      }
      result.signal = sig;
      end_others(sig);
      ending = true;
      kill_at = Clock::now() + o.grace;
    }
    for (Child& c : children) {
      if (!c.running) continue;
      int status = 0;
      const pid_t r = ::waitpid(c.pid, &status, WNOHANG);
      if (r == 0 || (r < 0 && errno == EINTR)) continue;
      c.running = false;
      c.status = status;
      --running;
      if (!failed(status) || ending) continue;
      // The first failure: end the others.
      result.failed_rank = c.rank;
      result.exit_code = exit_code_of(status);
      result.message =
          moe::detail::concat("moe launch: rank ", c.rank, " (pid ", c.pid, ") ",
                              describe_end(status), running > 0 ? "; ended the other ranks" : "");
      end_others(SIGTERM);
      ending = true;
      kill_at = Clock::now() + o.grace;
    }
    if (running > 0 && Clock::now() >= kill_at) {
      end_others(SIGKILL);
      kill_at = Clock::time_point::max();
    }
  }
  if (result.signal != 0) {
    result.exit_code = 128 + result.signal;
    result.message = moe::detail::concat("moe launch: got ", signal_name(result.signal),
                                         "; passed it on to the ranks, which have ended");
  }
  if (log && !result.message.empty()) {
    std::fprintf(log, "%s\n", result.message.c_str());
    std::fflush(log);
  }
  return result;
}

}  // namespace moe::dist
