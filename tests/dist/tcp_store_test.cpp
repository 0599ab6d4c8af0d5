// TcpStore: ranks as threads of this process on localhost (ephemeral ports): set / get / barrier
// across ranks, ranks that start before rank 0, the timeout paths (a rank that never arrives, a
// key never set, no server at all), a rank that leaves before a barrier, rank 0 leaving, and the
// refusals (a duplicate rank, a different world size, a port in use). Every message is checked
// for what it must name.
#include "moe/dist/tcp_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "moe/core/error.h"

namespace moe::dist {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TcpStoreOptions options(int rank, int world, int port, std::chrono::milliseconds timeout = 20s) {
  TcpStoreOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.rank = rank;
  o.world_size = world;
  o.timeout = timeout;
  return o;
}

// Runs fn(rank) on one thread per rank; returns each rank's error message ("" if none).
std::vector<std::string> run_ranks(int ranks, const std::function<void(int)>& fn) {
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
        if (errors[static_cast<size_t>(r)].empty()) errors[static_cast<size_t>(r)] = "(empty)";
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return errors;
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "missing '" << part << "' in: " << text;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

TEST(TcpStore, SetGetBarrierAcrossRanks) {
  constexpr int kWorld = 4;
  // Rank 0 first, on a free port, without waiting; then the others connect to that port.
  TcpStoreOptions o0 = options(0, kWorld, 0);
  o0.wait_for_workers = false;
  TcpStore store0(o0);
  const int port = store0.port();
  ASSERT_GT(port, 0);
  std::string binary("id\0with\xff bytes", 15);
  std::vector<std::string> got(kWorld);
  std::vector<std::string> late(kWorld);
  const auto errors = run_ranks(kWorld, [&](int r) {
    std::unique_ptr<TcpStore> own;
    if (r > 0) {
      TcpStoreOptions o = options(r, kWorld, port);
      o.wait_for_workers = false;
      own = std::make_unique<TcpStore>(o);
    }
    TcpStore& s = r == 0 ? store0 : *own;
    s.wait_for_workers();
    if (r == 0) s.set("nccl_unique_id", binary);
    got[static_cast<size_t>(r)] = s.get("nccl_unique_id");
    // get() waits for a key set later, by another rank.
    if (r == 3) {
      std::this_thread::sleep_for(200ms);
      s.set("late", "from 3");
    }
    late[static_cast<size_t>(r)] = s.get("late");
    s.barrier("after");
    s.barrier("after");  // a name may be used again
    s.set("rank/" + std::to_string(r), std::to_string(r * r));
    s.barrier("gathered");
    if (r == 0) {
      for (int q = 0; q < kWorld; ++q)
        EXPECT_EQ(s.get("rank/" + std::to_string(q)), std::to_string(q * q));
    }
    s.barrier("done");  // rank 0's server outlives every request
  });
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
    EXPECT_EQ(got[static_cast<size_t>(r)], binary) << "rank " << r;
    EXPECT_EQ(late[static_cast<size_t>(r)], "from 3") << "rank " << r;
  }
  EXPECT_EQ(store0.address(), "127.0.0.1:" + std::to_string(port));
}

TEST(TcpStore, RanksMayStartBeforeRankZero) {
  // The default path: every constructor waits for all ranks; rank 0 comes last.
  const int port = find_free_port();
  const auto start = Clock::now();
  const auto errors = run_ranks(3, [&](int r) {
    if (r == 0) std::this_thread::sleep_for(500ms);
    TcpStore s(options(r, 3, port));
    EXPECT_EQ(s.port(), port);
    s.barrier("b");
  });
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  EXPECT_LT(seconds_since(start), 10.0);
}

TEST(TcpStore, RankThatNeverArrivesTimesOut) {
  // World 4; rank 2 is never started. Each of the three others ends at its deadline.
  const int port = find_free_port();
  const auto start = Clock::now();
  const auto errors = run_ranks(3, [&](int i) {
    const int rank = i == 2 ? 3 : i;
    TcpStore s(options(rank, 4, port, 1s));
  });
  const double elapsed = seconds_since(start);
  for (const std::string& e : errors) {
    expect_contains(e, "rendezvous at 127.0.0.1:" + std::to_string(port) + " timed out after 1 s");
    expect_contains(e, "3 of 4 ranks arrived (missing: rank 2)");
  }
  EXPECT_GE(elapsed, 0.9);
  EXPECT_LT(elapsed, 5.0);
}

TEST(TcpStore, BarrierTimeoutNamesTheMissingRanks) {
  const int port = find_free_port();
  const auto errors = run_ranks(4, [&](int r) {
    TcpStore s(options(r, 4, port, 800ms));
    if (r == 1 || r == 2) {
      std::this_thread::sleep_for(2s);  // these two never reach the barrier in time
      return;
    }
    s.barrier("step");
  });
  for (int r : {0, 3}) {
    expect_contains(errors[static_cast<size_t>(r)], "barrier 'step' timed out after 0.8 s");
    expect_contains(errors[static_cast<size_t>(r)], "2 of 4 ranks arrived (missing: ranks 1, 2)");
  }
}

TEST(TcpStore, GetOfAKeyNeverSetTimesOut) {
  TcpStore s(options(0, 1, 0, 500ms));
  const auto start = Clock::now();
  try {
    s.get("never");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    expect_contains(e.what(), "store at 127.0.0.1:" + std::to_string(s.port()));
    expect_contains(e.what(), "get('never') timed out after 0.5 s: the key was never set");
  }
  EXPECT_LT(seconds_since(start), 3.0);
  s.set("k", "v");
  EXPECT_EQ(s.get("k"), "v");
  s.set("k", "w");  // overwritten
  EXPECT_EQ(s.get("k"), "w");
}

TEST(TcpStore, NoServerTimesOutConnecting) {
  const int port = find_free_port();  // nobody listens there
  const auto start = Clock::now();
  try {
    TcpStore s(options(1, 2, port, 600ms));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    expect_contains(e.what(), "rendezvous at 127.0.0.1:" + std::to_string(port) +
                                  " timed out after 0.6 s: rank 1 could not reach rank 0's store");
    expect_contains(e.what(), "refused");
  }
  EXPECT_LT(seconds_since(start), 3.0);
}

TEST(TcpStore, RankThatLeavesEndsTheBarrierAtOnce) {
  const int port = find_free_port();
  const auto start = Clock::now();
  const auto errors = run_ranks(3, [&](int r) {
    TcpStore s(options(r, 3, port, 30s));
    if (r == 2) return;  // leaves: its connection closes
    try {
      s.barrier("before-step");
    } catch (const Error&) {
      // Rank 0 keeps serving a moment, so that rank 1 hears the reason rather than rank 0's
      // departure.
      if (r == 0) std::this_thread::sleep_for(300ms);
      throw;
    }
  });
  EXPECT_EQ(errors[2], "");
  for (int r : {0, 1}) {
    // Rank 2 left; rank 1 may have left too by the time rank 0 arrives ("ranks 1, 2 left").
    expect_contains(errors[static_cast<size_t>(r)], "barrier 'before-step' failed: rank");
    expect_contains(errors[static_cast<size_t>(r)], "2 left (");
    // The count is of the ranks there when rank 2's departure was seen: 1 or 2.
    expect_contains(errors[static_cast<size_t>(r)], "of 3 ranks arrived (missing: rank");
  }
  EXPECT_LT(seconds_since(start), 10.0);  // not the 30 s timeout
}

TEST(TcpStore, RankZeroLeavingEndsTheWaits) {
  const int port = find_free_port();
  std::atomic<bool> connected{false};
  const auto errors = run_ranks(2, [&](int r) {
    TcpStore s(options(r, 2, port, 30s));
    if (r == 0) {
      std::this_thread::sleep_for(300ms);
      return;  // rank 0 exits: its server stops
    }
    connected = true;
    s.get("never");
  });
  EXPECT_TRUE(connected);
  EXPECT_EQ(errors[0], "");
  expect_contains(errors[1], "get('never') failed: rank 0 closed its store");
}

TEST(TcpStore, RefusesADuplicateRankAndAnotherWorldSize) {
  TcpStoreOptions o0 = options(0, 3, 0, 5s);
  o0.wait_for_workers = false;
  TcpStore store0(o0);
  TcpStoreOptions o1 = options(1, 3, store0.port(), 5s);
  o1.wait_for_workers = false;
  TcpStore store1(o1);
  try {
    TcpStore again(o1);
    ADD_FAILURE() << "a second rank 1 was accepted";
  } catch (const Error& e) {
    expect_contains(e.what(), "rank 0 refused rank 1: rank 1 is already connected");
  }
  TcpStoreOptions other = options(2, 4, store0.port(), 5s);
  other.wait_for_workers = false;
  try {
    TcpStore wrong(other);
    ADD_FAILURE() << "a rank of another world size was accepted";
  } catch (const Error& e) {
    expect_contains(e.what(), "rank 2 was started with world size 4, rank 0 with 3");
  }
}

TEST(TcpStore, PortInUse) {
  TcpStoreOptions o = options(0, 2, 0, 5s);
  o.wait_for_workers = false;
  TcpStore first(o);
  o.port = first.port();
  try {
    TcpStore second(o);
    ADD_FAILURE() << "two servers on one port";
  } catch (const Error& e) {
    expect_contains(e.what(), "rank 0 cannot listen on port " + std::to_string(first.port()));
    expect_contains(e.what(), "MASTER_PORT");
  }
}

TEST(TcpStore, OptionErrors) {
  TcpStoreOptions o = options(1, 2, 0);
  o.host = "";
  EXPECT_THROW(TcpStore{o}, Error);  // no MASTER_ADDR
  o = options(1, 2, 0);
  EXPECT_THROW(TcpStore{o}, Error);  // no MASTER_PORT
  o = options(2, 2, 1234);
  EXPECT_THROW(TcpStore{o}, Error);  // rank >= world size
}

}  // namespace
}  // namespace moe::dist
