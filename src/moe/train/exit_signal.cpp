// --exit-signal-handler (exit_signal.h).
#include "moe/train/exit_signal.h"

#include <atomic>
#include <csignal>
#include <string>

#include "moe/core/tensor.h"

namespace moe::train {
namespace {

std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler writes the flag lock-free");

// The handlers in place before ours, restored by the first signal.
struct sigaction g_previous_term {};
struct sigaction g_previous_int {};

extern "C" void on_exit_signal(int signo) {
  int none = 0;
  g_signal.compare_exchange_strong(none, signo);  // the first signal is the one reported
  sigaction(SIGTERM, &g_previous_term, nullptr);
  sigaction(SIGINT, &g_previous_int, nullptr);
}

}  // namespace

void install_exit_signal_handler() {
  g_signal.store(0);
  // The handlers to restore, read before ours is in place (a signal may come at once).
  // Installed again (a second run in the process): they stay those from before the first time.
  struct sigaction current {};
  if (sigaction(SIGTERM, nullptr, &current) == 0 && current.sa_handler != on_exit_signal)
    g_previous_term = current;
  if (sigaction(SIGINT, nullptr, &current) == 0 && current.sa_handler != on_exit_signal)
    g_previous_int = current;
  struct sigaction action {};
  action.sa_handler = on_exit_signal;
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, SIGINT);
  sigaddset(&action.sa_mask, SIGTERM);
  action.sa_flags = SA_RESTART;  // a read or write the signal interrupts goes on
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

int exit_signal_received() {
  return g_signal.load();
}

void reset_exit_signal() {
  g_signal.store(0);
}

int agreed_exit_signal(int mine, const std::shared_ptr<dist::ProcessGroup>& world, Device device) {
  if (!world || world->size() == 1) return mine;
  Tensor flag = Tensor::from_vector(std::vector<int32_t>{mine}, {1}, device);
  world->all_reduce(flag, dist::ReduceOp::max);
  return flag.to(Device::cpu()).to_vector<int32_t>()[0];
}

const char* exit_signal_name(int signo) {
  if (signo == SIGTERM) return "SIGTERM";
  if (signo == SIGINT) return "SIGINT";
  static thread_local std::string text;
  text = "signal " + std::to_string(signo);
  return text.c_str();
}

}  // namespace moe::train
