// --exit-signal-handler's pieces: the handler notes the first signal and puts back the handler
// before it (a second signal acts as without the flag); the ranks agree on a signal any of them
// got (Local threads). The run's use of it: train_run_parallel_test.cpp and
// train_process_test.cpp.
#include "moe/train/exit_signal.h"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <vector>

#include "moe/dist/local_backend.h"

namespace moe::train {
namespace {

std::atomic<int> g_previous_calls{0};
extern "C" void count_previous(int) {
  g_previous_calls.fetch_add(1);
}

TEST(ExitSignal, NotesTheFirstSignalAndRestoresThePreviousHandler) {
  struct sigaction counting {
  }, old_term{}, old_int{};
  counting.sa_handler = count_previous;
  sigemptyset(&counting.sa_mask);
  sigaction(SIGTERM, &counting, &old_term);
  sigaction(SIGINT, &counting, &old_int);
  g_previous_calls = 0;

  install_exit_signal_handler();
  EXPECT_EQ(exit_signal_received(), 0);
  raise(SIGTERM);  // noted; the process goes on
  EXPECT_EQ(exit_signal_received(), SIGTERM);
  EXPECT_EQ(g_previous_calls.load(), 0);
  raise(SIGINT);  // the handler from before is back: it gets the second signal
  EXPECT_EQ(g_previous_calls.load(), 1);
  EXPECT_EQ(exit_signal_received(), SIGTERM);  // the first one is reported

  // Installed again (another run in the process): the same behaviour, the same previous handler.
  install_exit_signal_handler();
  install_exit_signal_handler();
  EXPECT_EQ(exit_signal_received(), 0);
  raise(SIGINT);
  EXPECT_EQ(exit_signal_received(), SIGINT);
  raise(SIGTERM);
  EXPECT_EQ(g_previous_calls.load(), 2);
  reset_exit_signal();
  EXPECT_EQ(exit_signal_received(), 0);

  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGINT, &old_int, nullptr);
  EXPECT_STREQ(exit_signal_name(SIGTERM), "SIGTERM");
  EXPECT_STREQ(exit_signal_name(SIGINT), "SIGINT");
  EXPECT_STREQ(exit_signal_name(SIGUSR1), ("signal " + std::to_string(SIGUSR1)).c_str());
}

// Every rank learns of a signal that reached some of them only, so all stop at one iteration.
TEST(ExitSignal, RanksAgreeOnTheSignalAnyOfThemGot) {
  for (const std::vector<int>& got : std::vector<std::vector<int>>{
           {0, 0, 0}, {0, SIGTERM, 0}, {SIGINT, 0, SIGTERM}, {SIGINT, SIGINT, SIGINT}}) {
    int expected = 0;
    for (int s : got) expected = std::max(expected, s);
    std::mutex mutex;
    std::vector<int> agreed(got.size(), -1);
    dist::run_local(static_cast<int>(got.size()), [&](std::shared_ptr<dist::ProcessGroup> world) {
      const int r = world->rank();
      const int a = agreed_exit_signal(got[static_cast<size_t>(r)], world, Device::cpu());
      std::lock_guard lock(mutex);
      agreed[static_cast<size_t>(r)] = a;
    });
    for (int a : agreed) EXPECT_EQ(a, expected);
  }
  EXPECT_EQ(agreed_exit_signal(SIGTERM, nullptr, Device::cpu()), SIGTERM);
  EXPECT_EQ(agreed_exit_signal(0, nullptr, Device::cpu()), 0);
}

}  // namespace
}  // namespace moe::train
