#include "moe/dist/call_watchdog.h"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

namespace moe::dist {
namespace {

using Clock = std::chrono::steady_clock;

struct Call {
  const char* operation = "";
  const std::vector<int>* ranks = nullptr;
  Clock::time_point start;
};

// Process-wide: every group of the process registers here. The thread lives until exit.
struct Watchdog {
  std::mutex mutex;
  std::condition_variable changed;
  std::chrono::milliseconds timeout{0};
  std::string who;
  std::function<void(const std::string&)> abort;
  std::map<uint64_t, Call> calls;
  uint64_t next_id = 1;
  bool thread_started = false;

  static Watchdog& get() {
    static Watchdog* w = new Watchdog;  // never destroyed: its thread may run at exit
    return *w;
  }

  static std::string ranks_text(const std::vector<int>& ranks) {
    std::ostringstream out;
    const bool contiguous =
        !ranks.empty() && ranks.back() - ranks.front() + 1 == static_cast<int>(ranks.size());
    if (contiguous && ranks.size() > 2) {
      out << ranks.front() << "-" << ranks.back();
    } else {
      for (size_t i = 0; i < ranks.size(); ++i) out << (i ? "," : "") << ranks[i];
    }
    return out.str();
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      const auto period = std::clamp<std::chrono::milliseconds>(
          timeout / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
      changed.wait_for(lock, timeout.count() > 0 ? period : std::chrono::milliseconds(1000));
      if (timeout.count() <= 0) continue;
      const Clock::time_point now = Clock::now();
      for (auto it = calls.begin(); it != calls.end();) {
        const Call& c = it->second;
        if (now - c.start < timeout) {
          ++it;
          continue;
        }
        std::ostringstream message;
        message << who << " error: " << c.operation << " on the group of world ranks "
                << ranks_text(*c.ranks) << " did not complete in "
                << static_cast<double>(timeout.count()) / 1000.0
                << " s (--distributed-timeout-minutes): a rank of the group is not taking part "
                   "(it hangs, or waits in another call); ending the job";
        const std::function<void(const std::string&)> end = abort;
        it = calls.erase(it);  // a test's abort returns: this call is not reported again
        lock.unlock();
        if (end) end(message.str());
        lock.lock();
      }
    }
  }
};

}  // namespace

void set_call_timeout(std::chrono::milliseconds timeout, std::string who,
                      std::function<void(const std::string& message)> abort) {
  Watchdog& w = Watchdog::get();
  std::lock_guard<std::mutex> lock(w.mutex);
  w.timeout = timeout;
  w.who = std::move(who);
  w.abort = std::move(abort);
  if (timeout.count() > 0 && !w.thread_started) {
    w.thread_started = true;
    std::thread([&w] { w.run(); }).detach();
  }
  w.changed.notify_all();
}

WatchedCall::WatchedCall(const char* operation, const std::vector<int>& ranks) {
  Watchdog& w = Watchdog::get();
  std::lock_guard<std::mutex> lock(w.mutex);
  if (w.timeout.count() <= 0) return;
  id_ = w.next_id++;
  w.calls[id_] = Call{operation, &ranks, Clock::now()};
}

WatchedCall::~WatchedCall() {
  if (id_ == 0) return;
  Watchdog& w = Watchdog::get();
  std::lock_guard<std::mutex> lock(w.mutex);
  w.calls.erase(id_);
}

}  // namespace moe::dist
