// dist/call_watchdog.h: a watched call that outlasts the timeout is reported once, naming the
// call and its group; calls that end in time, and calls made while the watchdog is off, are not.
#include "moe/dist/call_watchdog.h"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace moe::dist {
namespace {

using namespace std::chrono_literals;

struct Reports {
  std::mutex mutex;
  std::vector<std::string> messages;
  size_t count() {
    std::lock_guard<std::mutex> lock(mutex);
    return messages.size();
  }
};

TEST(CallWatchdog, ACallPastTheTimeoutIsReportedNamingItAndItsGroup) {
  Reports reports;
  set_call_timeout(60ms, "[rank 1 test]", [&](const std::string& m) {
    std::lock_guard<std::mutex> lock(reports.mutex);
    reports.messages.push_back(m);
  });
  const std::vector<int> group{0, 1, 2, 3};
  {
    const WatchedCall quick("all_gather", group);  // ends in time
  }
  {
    const WatchedCall slow("all_reduce", group);
    for (int i = 0; i < 200 && reports.count() == 0; ++i) std::this_thread::sleep_for(10ms);
  }
  set_call_timeout(0ms, "", nullptr);  // off: the calls below are not watched
  {
    const WatchedCall unwatched("barrier", group);
    std::this_thread::sleep_for(150ms);
  }
  std::lock_guard<std::mutex> lock(reports.mutex);
  ASSERT_EQ(reports.messages.size(), 1u);
  const std::string& m = reports.messages[0];
  EXPECT_NE(m.find("[rank 1 test] error: all_reduce on the group of world ranks 0-3 did not "
                   "complete in 0.06 s"),
            std::string::npos)
      << m;
}

}  // namespace
}  // namespace moe::dist
