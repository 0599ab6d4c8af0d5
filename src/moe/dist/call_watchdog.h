// A watchdog for the blocking calls of a backend that has no timeout of its own (MPI): while a
// call is in progress it is registered with its start time; a thread wakes every so often, and
// when a call has outlasted the timeout (--distributed-timeout-minutes) it prints which call of
// which group waited, and ends this process through the given abort (mpirun then ends the job).
// So a rank that hangs, or stops taking part in a group's collectives, cannot hang the others:
// they end at the timeout, naming the call.
//
// Off until set_call_timeout() is given a positive timeout; a watched call then costs a lock and
// a map insertion.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moe::dist {

// Turns the watchdog on (timeout > 0) or off. `who` prefixes its message ("[rank 3 host]");
// `abort` ends the process (it must not return; tests pass one that records and returns, and
// the watchdog then stops watching that call). Thread-safe.
void set_call_timeout(std::chrono::milliseconds timeout, std::string who,
                      std::function<void(const std::string& message)> abort);

// A blocking call in progress, for the watchdog: `operation` ("all_reduce") on the group of
// `ranks` (world ranks; the vector must outlive the call). Does nothing while the watchdog is
// off.
class WatchedCall {
 public:
  WatchedCall(const char* operation, const std::vector<int>& ranks);
  ~WatchedCall();
  WatchedCall(const WatchedCall&) = delete;
  WatchedCall& operator=(const WatchedCall&) = delete;

 private:
  uint64_t id_ = 0;  // 0: not registered
};

}  // namespace moe::dist
