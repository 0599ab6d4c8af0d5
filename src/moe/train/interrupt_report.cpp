// SIGINT / SIGTERM report of `moe train` (interrupt_report.h).
#include "moe/train/interrupt_report.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>

namespace moe::train {
namespace {

// The run's state (the run's thread only).
struct State {
  std::string doing = "setting up";  // what is in progress
  std::string saving;                // the folder being saved, "" when none
  std::string last_saved;            // the last complete save, "" when none
  std::string save_dir;              // its --save folder
  std::string loaded;                // what the run started from
};
State& state() {
  static State s;
  return s;
}

// The published texts: everything after "interrupted by SIGxxx".
constexpr size_t kSlots = 3;
constexpr size_t kCapacity = 2048;
char g_text[kSlots][kCapacity];
size_t g_length[kSlots];
std::atomic<int> g_published{-1};
static_assert(std::atomic<int>::is_always_lock_free, "the handler reads the index lock-free");

std::string body() {
  const State& s = state();
  std::string text = " " + s.doing;
  if (!s.saving.empty())
    text +=
        " (not written: what there is of it stays in a hidden temporary folder, which the "
        "next save removes)";
  if (!s.last_saved.empty()) {
    text += "; last checkpoint saved: " + s.last_saved + " (resume with --load " + s.save_dir + ")";
  } else {
    text += "; this run saved no checkpoint";
    if (!s.loaded.empty()) text += " (it started from " + s.loaded + ")";
  }
  return text + "\n";
}

void publish() {
  const int current = g_published.load(std::memory_order_acquire);
  const int next = static_cast<int>((current + 1) % static_cast<int>(kSlots));
  const std::string text = body();
  const size_t n = std::min(text.size(), kCapacity);
  std::memcpy(g_text[next], text.data(), n);
  if (n == kCapacity) g_text[next][n - 1] = '\n';  // cut, but still a line
  g_length[next] = n;
  g_published.store(next, std::memory_order_release);
}

const char* signal_name(int signo) {
  return signo == SIGINT ? "SIGINT" : signo == SIGTERM ? "SIGTERM" : "a signal";
}

void write_all(const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(STDERR_FILENO, data, size);
    if (n <= 0) return;  // nothing else can be done in a handler
    data += n;
    size -= static_cast<size_t>(n);
  }
}

extern "C" void on_interrupt(int signo) {
  static const char kPrefix[] = "\nmoe train: interrupted by ";
  write_all(kPrefix, sizeof kPrefix - 1);
  const char* name = signal_name(signo);
  write_all(name, std::strlen(name));
  const int slot = g_published.load(std::memory_order_acquire);
  if (slot >= 0) {
    write_all(g_text[slot], g_length[slot]);
  } else {
    static const char kNothing[] = " before the run started\n";
    write_all(kNothing, sizeof kNothing - 1);
  }
  ::_exit(128 + signo);
}

}  // namespace

void install_interrupt_report() {
  publish();
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, SIGINT);  // one report, even when both arrive
  sigaddset(&action.sa_mask, SIGTERM);
  action.sa_flags = 0;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void interrupt_report_phase(const std::string& phase) {
  state().doing = phase;
  publish();
}

void interrupt_report_iteration(int64_t iteration, int64_t train_iters) {
  char text[96];
  std::snprintf(text, sizeof text, "during iteration %lld of %lld",
                static_cast<long long>(iteration), static_cast<long long>(train_iters));
  state().doing = text;
  publish();
}

void interrupt_report_evaluation(int64_t iteration) {
  state().doing = "during the evaluation at iteration " + std::to_string(iteration);
  publish();
}

void interrupt_report_saving(const std::string& folder) {
  state().doing = "while saving " + folder;
  state().saving = folder;
  publish();
}

void interrupt_report_saved(const std::string& folder, const std::string& save_dir) {
  State& s = state();
  s.saving.clear();
  s.last_saved = folder;
  s.save_dir = save_dir;
  s.doing = "after saving " + folder;
  publish();
}

void interrupt_report_loaded(const std::string& folder) {
  state().loaded = folder;
  publish();
}

void interrupt_report_reset() {
  state() = State{};
  publish();
}

std::string interrupt_report_text(int signo) {
  return std::string("moe train: interrupted by ") + signal_name(signo) + body();
}

}  // namespace moe::train
