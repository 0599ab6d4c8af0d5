// The Local backend (ranks as threads): every collective on 1, 2, 3, 4 and 8 ranks with
// rank-tagged payloads (element i of rank r holds tag(r, i)), the -v forms with zero counts,
// subgroups, abort propagation (a failing rank never leaves the others hanging), and the
// errors for bad calls, which name the collective, the rank and the shapes.
#include "moe/dist/local_backend.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"

namespace moe::dist {
namespace {

using ::moe::test::message_of;

constexpr int kWorldSizes[] = {1, 2, 3, 4, 8};
constexpr DType kReduceDTypes[] = {DType::f64, DType::f32, DType::bf16,
                                   DType::f16, DType::i64, DType::i32};
constexpr ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min};

// Small integers (exact in every dtype, sums over 8 ranks included) that differ by rank and
// by element, with negative values so max and min are not trivially the last or first rank.
double tag(int rank, int64_t i) {
  return (rank + 1) * (i % 7 + 1) - 3.0 * rank;
}

Tensor make(const Shape& shape, DType dtype, const std::function<double(int64_t)>& value) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = value(i);
  return Tensor::from_vector(values, shape).to(dtype);
}

// Element i of the reduction over ranks 0..world-1 of tag(r, offset + i), computed exactly.
double reduce_tags(ReduceOp op, int world, int64_t index, DType dtype) {
  double acc = tag(0, index);
  for (int r = 1; r < world; ++r) {
    const double x = tag(r, index);
    if (op == ReduceOp::max)
      acc = std::max(acc, x);
    else if (op == ReduceOp::min)
      acc = std::min(acc, x);
    else
      acc += x;
  }
  if (op == ReduceOp::avg) {
    // Integers divide as C++ does (toward zero); floats are compared with a tolerance.
    acc = is_floating(dtype) ? acc / world : std::trunc(acc / world);
  }
  return acc;
}

// Checks a result: exactly, except avg of floats (a division, rounded in the dtype).
::testing::AssertionResult matches(const Tensor& actual, const Tensor& expected, ReduceOp op) {
  if (op == ReduceOp::avg && is_floating(actual.dtype()))
    return test::close(actual.to(DType::f64), expected.to(DType::f64),
                       test::tolerance(actual.dtype()));
  return test::equal(actual, expected);
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text)

TEST(LocalBackend, RanksSizesAndBackend) {
  for (int world : kWorldSizes) {
    SCOPED_TRACE("world " + std::to_string(world));
    std::vector<int> seen(static_cast<size_t>(world), 0);
    std::vector<int> all(static_cast<size_t>(world));
    std::iota(all.begin(), all.end(), 0);
    run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
      EXPECT_EQ(pg->size(), world);
      EXPECT_EQ(pg->backend(), "local");
      EXPECT_EQ(pg->world_ranks(), all);
      ASSERT_GE(pg->rank(), 0);
      ASSERT_LT(pg->rank(), world);
      seen[static_cast<size_t>(pg->rank())] += 1;  // each thread writes its own entry
    });
    for (int count : seen) EXPECT_EQ(count, 1);
  }
}

TEST(LocalBackend, AllReduceEveryOpAndDtype) {
  for (int world : kWorldSizes) {
    for (DType dtype : kReduceDTypes) {
      for (ReduceOp op : kOps) {
        SCOPED_TRACE(std::string("world ") + std::to_string(world) + " " + dtype_name(dtype) + " " +
                     reduce_op_name(op));
        run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
          const int r = pg->rank();
          for (const Shape& shape : {Shape{5, 3}, Shape{}, Shape{0, 4}, Shape{11}}) {
            Tensor t = make(shape, dtype, [&](int64_t i) { return tag(r, i); });
            pg->all_reduce(t, op);
            EXPECT_TRUE(matches(
                t, make(shape, dtype, [&](int64_t i) { return reduce_tags(op, world, i, dtype); }),
                op))
                << "rank " << r << " shape " << shape_str(shape);
          }
        });
      }
    }
  }
}

// bf16 and f16 sums accumulate in fp32: 256 + 1 + 1 + ... (8 ranks) is 263 in fp32, rounded
// once to bf16 264; summing in bf16 would round 256 + 1 back to 256 at every step.
TEST(LocalBackend, HalfPrecisionSumsAccumulateInFp32) {
  run_local(8, [&](std::shared_ptr<ProcessGroup> pg) {
    Tensor t = Tensor::full({4}, pg->rank() == 0 ? 256.0 : 1.0, DType::bf16);
    pg->all_reduce(t);
    EXPECT_TRUE(test::equal(t, Tensor::full({4}, 264.0, DType::bf16)));
    // f16 has 11 significant bits: 2048 + 1 rounds back to 2048 in f16, 2055 -> 2056 in fp32.
    Tensor h = Tensor::full({4}, pg->rank() == 0 ? 2048.0 : 1.0, DType::f16);
    pg->all_reduce(h);
    EXPECT_TRUE(test::equal(h, Tensor::full({4}, 2056.0, DType::f16)));
  });
}

// Random f32 data: the sum is in rank order (bitwise the serial loop), the same on every rank,
// and the same when repeated.
TEST(LocalBackend, AllReduceIsDeterministicAndInRankOrder) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  constexpr int kWorld = 8;
  std::vector<Tensor> inputs;
  for (int r = 0; r < kWorld; ++r)
    inputs.push_back(test::random_normal({1000}, DType::f32, seed + static_cast<uint64_t>(r),
                                         Device::cpu(), 1e3 * (r + 1)));
  std::vector<float> serial(1000);
  for (int i = 0; i < 1000; ++i) {
    float acc = inputs[0].data<float>()[i];
    for (int r = 1; r < kWorld; ++r) acc += inputs[static_cast<size_t>(r)].data<float>()[i];
    serial[static_cast<size_t>(i)] = acc;
  }
  const Tensor expected = Tensor::from_vector(serial, {1000});
  for (int repeat = 0; repeat < 2; ++repeat) {
    run_local(kWorld, [&](std::shared_ptr<ProcessGroup> pg) {
      Tensor t = inputs[static_cast<size_t>(pg->rank())].clone();
      pg->all_reduce(t);
      EXPECT_EQ(std::memcmp(t.raw(), expected.raw(), expected.nbytes()), 0)
          << "rank " << pg->rank();
    });
  }
}

TEST(LocalBackend, AllGather) {
  for (int world : kWorldSizes) {
    for (DType dtype : {DType::f32, DType::bf16, DType::i64, DType::u8}) {
      SCOPED_TRACE(std::string("world ") + std::to_string(world) + " " + dtype_name(dtype));
      run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
        const int r = pg->rank();
        for (int64_t rows : {2, 0}) {
          Tensor in = make({rows, 3}, dtype, [&](int64_t i) { return tag(r, i) + 30; });
          Tensor out = Tensor::zeros({world * rows, 3}, dtype);
          pg->all_gather(in, out);
          // Row q * rows + j holds rank q's row j.
          EXPECT_TRUE(test::equal(out, make({world * rows, 3}, dtype, [&](int64_t i) {
                                    const int64_t per_rank = rows * 3;
                                    return tag(static_cast<int>(i / per_rank), i % per_rank) + 30;
                                  })));
        }
      });
    }
  }
}

// counts[q] = (2q + 1) mod 3: 1, 0, 2, 1, 0, 2, ... so ranks with no rows take part.
std::vector<int64_t> uneven_counts(int world) {
  std::vector<int64_t> counts;
  for (int q = 0; q < world; ++q) counts.push_back((2 * q + 1) % 3);
  return counts;
}

TEST(LocalBackend, AllGatherVWithZeroCounts) {
  for (int world : kWorldSizes) {
    SCOPED_TRACE("world " + std::to_string(world));
    const std::vector<int64_t> counts = uneven_counts(world);
    const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
    run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
      const int r = pg->rank();
      Tensor in = make({counts[static_cast<size_t>(r)], 2}, DType::f32,
                       [&](int64_t i) { return 100.0 * r + static_cast<double>(i); });
      Tensor out = Tensor::zeros({total, 2}, DType::f32);
      pg->all_gather_v(in, out, counts);
      std::vector<double> expected;
      for (int q = 0; q < world; ++q)
        for (int64_t i = 0; i < counts[static_cast<size_t>(q)] * 2; ++i)
          expected.push_back(100.0 * q + i);
      EXPECT_TRUE(test::equal(out, Tensor::from_vector(expected, {total, 2}).to(DType::f32)));
      // Everyone sends nothing.
      std::vector<int64_t> zeros(static_cast<size_t>(world), 0);
      Tensor empty_out = Tensor::zeros({0, 2}, DType::f32);
      pg->all_gather_v(in.rows(0, 0), empty_out, zeros);
    });
  }
}

TEST(LocalBackend, ReduceScatter) {
  for (int world : kWorldSizes) {
    for (DType dtype : kReduceDTypes) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::avg}) {
        SCOPED_TRACE(std::string("world ") + std::to_string(world) + " " + dtype_name(dtype) + " " +
                     reduce_op_name(op));
        run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
          const int r = pg->rank();
          const int64_t n = 3;  // rows per rank, 2 columns
          Tensor in = make({world * n, 2}, dtype, [&](int64_t i) { return tag(r, i); });
          Tensor out = Tensor::zeros({n, 2}, dtype);
          pg->reduce_scatter(in, out, op);
          // Chunk r of the reduced tensor.
          EXPECT_TRUE(
              matches(out,
                      make({n, 2}, dtype,
                           [&](int64_t i) { return reduce_tags(op, world, r * n * 2 + i, dtype); }),
                      op))
              << "rank " << r;
        });
      }
    }
  }
}

TEST(LocalBackend, ReduceScatterVWithZeroCounts) {
  for (int world : kWorldSizes) {
    SCOPED_TRACE("world " + std::to_string(world));
    const std::vector<int64_t> counts = uneven_counts(world);
    const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
    for (DType dtype : {DType::f64, DType::bf16, DType::i32}) {
      run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
        const int r = pg->rank();
        Tensor in = make({total, 3}, dtype, [&](int64_t i) { return tag(r, i); });
        const int64_t mine = counts[static_cast<size_t>(r)];
        Tensor out = Tensor::zeros({mine, 3}, dtype);
        pg->reduce_scatter_v(in, out, counts);
        const int64_t offset = std::accumulate(counts.begin(), counts.begin() + r, int64_t{0});
        EXPECT_TRUE(test::equal(out, make({mine, 3}, dtype,
                                          [&](int64_t i) {
                                            return reduce_tags(ReduceOp::sum, world, offset * 3 + i,
                                                               dtype);
                                          })))
            << "rank " << r << " " << dtype_name(dtype);
      });
    }
  }
}

// Rank s sends sends(s, d) = (s + 2d) mod 3 rows to rank d (some zero); the row j of that
// chunk holds 1000 s + 10 d + j in both columns.
TEST(LocalBackend, AllToAllVWithZeroCounts) {
  auto sends = [](int s, int d) -> int64_t { return (s + 2 * d) % 3; };
  for (int world : kWorldSizes) {
    SCOPED_TRACE("world " + std::to_string(world));
    run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
      const int r = pg->rank();
      std::vector<int64_t> send_counts, recv_counts;
      std::vector<double> in_values, expected;
      for (int d = 0; d < world; ++d) {
        send_counts.push_back(sends(r, d));
        for (int64_t j = 0; j < sends(r, d); ++j)
          for (int col = 0; col < 2; ++col) in_values.push_back(1000.0 * r + 10.0 * d + j);
      }
      for (int s = 0; s < world; ++s) {
        recv_counts.push_back(sends(s, r));
        for (int64_t j = 0; j < sends(s, r); ++j)
          for (int col = 0; col < 2; ++col) expected.push_back(1000.0 * s + 10.0 * r + j);
      }
      const int64_t in_rows = static_cast<int64_t>(in_values.size() / 2);
      const int64_t out_rows = static_cast<int64_t>(expected.size() / 2);
      for (DType dtype : {DType::f32, DType::i64}) {
        Tensor in = Tensor::from_vector(in_values, {in_rows, 2}).to(dtype);
        Tensor out = Tensor::zeros({out_rows, 2}, dtype);
        pg->all_to_all_v(in, out, send_counts, recv_counts);
        EXPECT_TRUE(test::equal(out, Tensor::from_vector(expected, {out_rows, 2}).to(dtype)))
            << "rank " << r << " " << dtype_name(dtype);
      }
    });
  }
}

TEST(LocalBackend, AllToAllVWhereARankSendsAndReceivesNothing) {
  run_local(4, [&](std::shared_ptr<ProcessGroup> pg) {
    const int r = pg->rank();
    // Ranks 1..3 send one row to each other rank except 0; rank 0 takes no part in traffic.
    std::vector<int64_t> counts(4, 0);
    if (r != 0)
      for (int d = 1; d < 4; ++d) counts[static_cast<size_t>(d)] = 1;
    Tensor in = Tensor::full({r == 0 ? 0 : 3, 5}, r, DType::f32);
    Tensor out = Tensor::zeros({r == 0 ? 0 : 3, 5}, DType::f32);
    pg->all_to_all_v(in, out, counts, counts);
    if (r != 0) {
      EXPECT_TRUE(
          test::equal(out, make({3, 5}, DType::f32, [](int64_t i) { return 1.0 + i / 5; })));
    }
  });
}

TEST(LocalBackend, BroadcastFromEveryRoot) {
  for (int world : kWorldSizes) {
    SCOPED_TRACE("world " + std::to_string(world));
    run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
      const int r = pg->rank();
      for (int root = 0; root < world; ++root) {
        for (DType dtype : {DType::f32, DType::bf16, DType::i32}) {
          Tensor t = make({4, 3}, dtype, [&](int64_t i) { return tag(r, i); });
          pg->broadcast(t, root);
          EXPECT_TRUE(test::equal(t, make({4, 3}, dtype, [&](int64_t i) { return tag(root, i); })))
              << "rank " << r << " root " << root;
        }
        Tensor scalar = Tensor::scalar(r + 0.5, DType::f64);
        pg->broadcast(scalar, root);
        EXPECT_EQ(scalar.item(), root + 0.5);
      }
    });
  }
}

TEST(LocalBackend, BarrierWaitsForEveryRank) {
  for (int world : kWorldSizes) {
    std::atomic<int> arrived{0};
    run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
      for (int round = 1; round <= 3; ++round) {
        // Late ranks are slow, so a barrier that let anyone through early would be caught.
        std::this_thread::sleep_for(std::chrono::milliseconds(pg->rank()));
        arrived.fetch_add(1);
        pg->barrier();
        EXPECT_GE(arrived.load(), round * world);
        pg->barrier();  // nobody starts the next round before all checked this one
      }
    });
  }
}

// Many collectives back to back reuse the slots: a race between one collective's readers and
// the next one's writers would show up as wrong rows.
TEST(LocalBackend, ManyCollectivesInARow) {
  run_local(8, [&](std::shared_ptr<ProcessGroup> pg) {
    const int r = pg->rank();
    for (int step = 0; step < 200; ++step) {
      Tensor in = Tensor::full({1, 2}, 100.0 * step + r, DType::f64);
      Tensor out = Tensor::zeros({8, 2}, DType::f64);
      pg->all_gather(in, out);
      EXPECT_TRUE(test::equal(
          out, make({8, 2}, DType::f64,
                    [&](int64_t i) { return 100.0 * step + static_cast<double>(i / 2); })))
          << "step " << step;
      Tensor sum = Tensor::full({2}, step + r, DType::i64);
      pg->all_reduce(sum);
      EXPECT_EQ(sum.to_vector<int64_t>()[1], 8 * step + 28);
    }
  });
}

TEST(LocalBackend, Subgroups) {
  run_local(8, [&](std::shared_ptr<ProcessGroup> world) {
    const int r = world->rank();
    // Even and odd ranks: group rank = position in the list.
    const std::vector<int> parity =
        r % 2 == 0 ? std::vector<int>{0, 2, 4, 6} : std::vector<int>{1, 3, 5, 7};
    auto half = world->split({{0, 2, 4, 6}, {1, 3, 5, 7}});
    ASSERT_NE(half, nullptr);
    EXPECT_EQ(half->size(), 4);
    EXPECT_EQ(half->rank(), r / 2);
    EXPECT_EQ(half->world_ranks(), parity);
    Tensor t = Tensor::full({3}, r, DType::f64);
    half->all_reduce(t);
    EXPECT_EQ(t.to_vector<double>()[2], r % 2 == 0 ? 12.0 : 16.0);

    // Listed in reverse: the group order is the list order, so gathers come back reversed.
    const std::vector<int> reversed =
        r < 4 ? std::vector<int>{3, 2, 1, 0} : std::vector<int>{7, 6, 5, 4};
    auto quarter = world->split({{3, 2, 1, 0}, {7, 6, 5, 4}});
    EXPECT_EQ(quarter->rank(), r < 4 ? 3 - r : 7 - r);
    Tensor in = Tensor::full({1}, r, DType::i32);
    Tensor out = Tensor::zeros({4}, DType::i32);
    quarter->all_gather(in, out);
    EXPECT_TRUE(test::equal(
        out, Tensor::from_vector(std::vector<int32_t>(reversed.begin(), reversed.end()), {4})));

    // A subgroup of a subgroup takes ranks of its parent.
    const std::vector<int> pair =
        half->rank() < 2 ? std::vector<int>{0, 1} : std::vector<int>{2, 3};
    auto sub = half->split({{0, 1}, {2, 3}});
    EXPECT_EQ(sub->world_ranks(), (std::vector<int>{parity[static_cast<size_t>(pair[0])],
                                                    parity[static_cast<size_t>(pair[1])]}));
    Tensor s = Tensor::full({1}, r, DType::i64);
    sub->all_reduce(s, ReduceOp::max);
    EXPECT_EQ(s.item(), sub->world_ranks()[1]);

    // The same list twice gives two groups, matched by call order; interleave them.
    std::vector<int> everyone(8);
    std::iota(everyone.begin(), everyone.end(), 0);
    auto a = world->new_subgroup(everyone);
    auto b = world->new_subgroup(everyone);
    Tensor x = Tensor::full({2}, 1.0, DType::f32);
    Tensor y = Tensor::full({2}, r, DType::f32);
    a->all_reduce(x);
    b->broadcast(y, 5);
    EXPECT_EQ(x.to_vector<float>()[0], 8.0f);
    EXPECT_EQ(y.to_vector<float>()[0], 5.0f);

    // Ranks in no list get no group; the listed ones a group of their own.
    auto some = world->new_subgroup({5, 1});
    EXPECT_EQ(some == nullptr, r != 1 && r != 5);
    if (some) {
      EXPECT_EQ(some->rank(), r == 5 ? 0 : 1);
      Tensor v = Tensor::full({1}, r, DType::i64);
      some->all_reduce(v);
      EXPECT_EQ(v.item(), 6.0);
    }

    // A group of one.
    auto self = world->split({{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}});
    Tensor alone = Tensor::full({2}, r, DType::f32);
    self->all_reduce(alone, ReduceOp::avg);
    EXPECT_EQ(alone.to_vector<float>()[1], static_cast<float>(r));
    EXPECT_EQ(self->rank(), 0);
  });
}

// Collectives on disjoint subgroups run at the same time without interfering.
TEST(LocalBackend, DisjointSubgroupsRunConcurrently) {
  run_local(8, [&](std::shared_ptr<ProcessGroup> world) {
    const int r = world->rank();
    const int base = r / 2 * 2;
    auto pair = world->split({{0, 1}, {2, 3}, {4, 5}, {6, 7}});
    for (int step = 0; step < 100; ++step) {
      Tensor t = Tensor::full({4}, r + step, DType::i64);
      pair->all_reduce(t);
      EXPECT_EQ(t.to_vector<int64_t>()[3], 2 * base + 1 + 2 * step);
    }
  });
}

TEST(LocalBackend, OneRankThrowsTheOthersAbortInsteadOfHanging) {
  for (int world : {2, 3, 4, 8}) {
    for (bool others_wait_first : {true, false}) {
      SCOPED_TRACE("world " + std::to_string(world) +
                   (others_wait_first ? " (others blocked first)" : " (others enter after)"));
      const int failing = world / 2;
      std::vector<std::string> seen(static_cast<size_t>(world));
      std::string rethrown;
      try {
        run_local(world, [&](std::shared_ptr<ProcessGroup> pg) {
          const int r = pg->rank();
          // Either the failing rank is late (the others are already blocked in the
          // collective), or the others are late (they enter an aborted world).
          if ((r == failing) == others_wait_first)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          if (r == failing) throw std::runtime_error("boom");
          Tensor t = Tensor::full({4}, 1.0, DType::f32);
          seen[static_cast<size_t>(r)] = message_of([&] { pg->all_reduce(t); });
          // Every later collective fails the same way.
          EXPECT_EQ(message_of([&] { pg->barrier(); }), seen[static_cast<size_t>(r)]);
        });
      } catch (const std::exception& e) {
        rethrown = e.what();
      }
      EXPECT_EQ(rethrown, "boom");
      for (int r = 0; r < world; ++r) {
        if (r == failing) continue;
        EXPECT_EQ(seen[static_cast<size_t>(r)],
                  "collective aborted: rank " + std::to_string(failing) + " failed: boom")
            << "rank " << r;
      }
    }
  }
}

TEST(LocalBackend, AbortReachesRanksBlockedInSubgroups) {
  std::vector<std::string> seen(8);
  std::string rethrown = message_of([&] {
    run_local(8, [&](std::shared_ptr<ProcessGroup> world) {
      const int r = world->rank();
      auto half = world->split({{0, 1, 2, 3}, {4, 5, 6, 7}});
      if (r == 6) {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        throw std::logic_error("rank six gives up");
      }
      // Ranks 0..3 finish their subgroup collective, then block in a world barrier; ranks
      // 4, 5, 7 block in their subgroup collective, which rank 6 never joins.
      Tensor t = Tensor::full({1}, 1.0, DType::f64);
      seen[static_cast<size_t>(r)] = message_of([&] {
        half->all_reduce(t);
        world->barrier();
      });
    });
  });
  EXPECT_EQ(rethrown, "rank six gives up");
  for (int r : {0, 1, 2, 3, 4, 5, 7})
    EXPECT_EQ(seen[static_cast<size_t>(r)], "collective aborted: rank 6 failed: rank six gives up")
        << "rank " << r;
}

TEST(LocalBackend, ARankThatReturnsEarlyDoesNotHangTheOthers) {
  const std::string message = message_of([] {
    run_local(4, [](std::shared_ptr<ProcessGroup> pg) {
      if (pg->rank() == 2) return;  // never joins the all_reduce
      Tensor t = Tensor::full({1}, 1.0, DType::f32);
      pg->all_reduce(t);
    });
  });
  EXPECT_CONTAINS(message, "all_reduce");
  EXPECT_CONTAINS(message, "world rank 2 returned from its function without joining");
}

TEST(LocalBackend, RunLocalRejectsAnEmptyWorld) {
  EXPECT_THROW(run_local(0, [](std::shared_ptr<ProcessGroup>) {}), Error);
}

// A bad call on one rank: that rank's error names the collective, the rank and the shapes,
// is what run_local rethrows, and the other ranks abort instead of waiting.
TEST(LocalBackend, BadOutputShapeOnOneRank) {
  std::vector<std::string> seen(4);
  const std::string message = message_of([&] {
    run_local(4, [&](std::shared_ptr<ProcessGroup> pg) {
      const int r = pg->rank();
      Tensor in = Tensor::zeros({2, 3}, DType::f32);
      Tensor out = Tensor::zeros({r == 1 ? 7 : 8, 3}, DType::f32);
      seen[static_cast<size_t>(r)] = message_of([&] { pg->all_gather(in, out); });
      if (!seen[static_cast<size_t>(r)].empty()) throw Error(seen[static_cast<size_t>(r)]);
    });
  });
  EXPECT_CONTAINS(message, "all_gather (rank 1 of 4");
  EXPECT_CONTAINS(message, "out has shape [7, 3], expected [8, 3]");
  EXPECT_EQ(seen[1], message);
  for (int r : {0, 2, 3})
    EXPECT_EQ(seen[static_cast<size_t>(r)], "collective aborted: rank 1 failed: " + message);
}

// Calls that disagree across ranks: every rank detects it and throws the same message.
void expect_every_rank_throws(int world, const std::function<void(ProcessGroup&)>& call,
                              const std::vector<std::string>& parts) {
  std::vector<std::string> seen(static_cast<size_t>(world));
  EXPECT_THROW(run_local(world,
                         [&](std::shared_ptr<ProcessGroup> pg) {
                           seen[static_cast<size_t>(pg->rank())] = message_of([&] { call(*pg); });
                           if (!seen[static_cast<size_t>(pg->rank())].empty())
                             throw Error(seen[static_cast<size_t>(pg->rank())]);
                         }),
               Error);
  for (int r = 0; r < world; ++r) {
    const std::string& m = seen[static_cast<size_t>(r)];
    for (const std::string& part : parts) EXPECT_CONTAINS(m, part) << " (rank " << r << ")";
  }
}

TEST(LocalBackend, MismatchedCallsAcrossRanks) {
  // Input shapes differ.
  expect_every_rank_throws(
      4,
      [](ProcessGroup& pg) {
        const int64_t rows = pg.rank() == 2 ? 3 : 2;
        Tensor in = Tensor::zeros({rows, 3}, DType::f32);
        Tensor out = Tensor::zeros({4 * rows, 3}, DType::f32);
        pg.all_gather(in, out);
      },
      {"all_gather", "in shape differs across ranks", "rank 1 [2, 3]", "rank 2 [3, 3]"});
  // Different collectives.
  expect_every_rank_throws(2,
                           [](ProcessGroup& pg) {
                             Tensor t = Tensor::zeros({2}, DType::f32);
                             if (pg.rank() == 0)
                               pg.all_reduce(t);
                             else
                               pg.broadcast(t, 0);
                           },
                           {"collective mismatch", "rank 0 all_reduce", "rank 1 broadcast"});
  // Different dtypes.
  expect_every_rank_throws(3,
                           [](ProcessGroup& pg) {
                             Tensor t =
                                 Tensor::zeros({2}, pg.rank() == 1 ? DType::bf16 : DType::f32);
                             pg.all_reduce(t);
                           },
                           {"all_reduce", "dtype differs", "rank 1 bf16"});
  // Different ops.
  expect_every_rank_throws(2,
                           [](ProcessGroup& pg) {
                             Tensor t = Tensor::zeros({2}, DType::f32);
                             pg.all_reduce(t, pg.rank() == 0 ? ReduceOp::sum : ReduceOp::max);
                           },
                           {"all_reduce", "op differs", "rank 0 sum", "rank 1 max"});
  // Different roots.
  expect_every_rank_throws(3,
                           [](ProcessGroup& pg) {
                             Tensor t = Tensor::zeros({2}, DType::f32);
                             pg.broadcast(t, pg.rank() == 2 ? 1 : 0);
                           },
                           {"broadcast", "root differs"});
  // all_gather_v counts differ.
  expect_every_rank_throws(
      2,
      [](ProcessGroup& pg) {
        std::vector<int64_t> counts = {1, pg.rank() == 0 ? 1 : 2};
        Tensor in = Tensor::zeros({counts[static_cast<size_t>(pg.rank())], 2}, DType::f32);
        Tensor out = Tensor::zeros({counts[0] + counts[1], 2}, DType::f32);
        pg.all_gather_v(in, out, counts);
      },
      {"all_gather_v", "counts differs", "rank 0 [1, 1]", "rank 1 [1, 2]"});
  // all_to_all_v: rank 0 sends 2 rows to rank 1, which expects 1.
  expect_every_rank_throws(2,
                           [](ProcessGroup& pg) {
                             std::vector<int64_t> send = {1, pg.rank() == 0 ? 2 : 1};
                             std::vector<int64_t> recv = {1, 1};
                             Tensor in = Tensor::zeros({send[0] + send[1], 2}, DType::f32);
                             Tensor out = Tensor::zeros({2, 2}, DType::f32);
                             pg.all_to_all_v(in, out, send, recv);
                           },
                           {"all_to_all_v", "rank 0 sends 2 rows to rank 1, which expects 1"});
}

TEST(LocalBackend, BadArgumentsNameTheCollective) {
  auto first_error = [](int world, const std::function<void(ProcessGroup&)>& call) {
    return message_of(
        [&] { run_local(world, [&](std::shared_ptr<ProcessGroup> pg) { call(*pg); }); });
  };
  std::string m = first_error(2, [](ProcessGroup& pg) {
    Tensor t = Tensor::zeros({2}, DType::u8);
    pg.all_reduce(t);
  });
  EXPECT_CONTAINS(m, "all_reduce");
  EXPECT_CONTAINS(m, "dtype u8 cannot be reduced");

  m = first_error(3, [](ProcessGroup& pg) {
    Tensor in = Tensor::zeros({4, 2}, DType::f32);
    Tensor out = Tensor::zeros({1, 2}, DType::f32);
    pg.reduce_scatter(in, out);
  });
  EXPECT_CONTAINS(m, "reduce_scatter");
  EXPECT_CONTAINS(m, "do not split over 3 ranks");

  m = first_error(2, [](ProcessGroup& pg) {
    Tensor in = Tensor::zeros({4, 2}, DType::f32);
    Tensor out = Tensor::zeros({3, 2}, DType::f32);
    pg.reduce_scatter(in, out);
  });
  EXPECT_CONTAINS(m, "out has shape [3, 2], expected [2, 2]");

  m = first_error(2, [](ProcessGroup& pg) {
    std::vector<int64_t> counts = {1, 2, 3};
    Tensor in = Tensor::zeros({1, 2}, DType::f32);
    Tensor out = Tensor::zeros({3, 2}, DType::f32);
    pg.all_gather_v(in, out, counts);
  });
  EXPECT_CONTAINS(m, "all_gather_v");
  EXPECT_CONTAINS(m, "counts [1, 2, 3] has 3 entries for 2 ranks");

  m = first_error(2, [](ProcessGroup& pg) {
    std::vector<int64_t> counts = {2, 2};
    Tensor in = Tensor::zeros({3, 2}, DType::f32);
    Tensor out = Tensor::zeros({2, 2}, DType::f32);
    pg.reduce_scatter_v(in, out, counts);
  });
  EXPECT_CONTAINS(m, "reduce_scatter_v");
  EXPECT_CONTAINS(m, "in has shape [3, 2] but the counts [2, 2] sum to 4 rows");

  m = first_error(2, [](ProcessGroup& pg) {
    std::vector<int64_t> send = {1, -1}, recv = {0, 0};
    Tensor in = Tensor::zeros({0, 2}, DType::f32);
    Tensor out = Tensor::zeros({0, 2}, DType::f32);
    pg.all_to_all_v(in, out, send, recv);
  });
  EXPECT_CONTAINS(m, "all_to_all_v");
  EXPECT_CONTAINS(m, "negative entry in send_counts");

  m = first_error(2, [](ProcessGroup& pg) {
    Tensor in = Tensor::zeros({1, 2}, DType::f32);
    Tensor out = Tensor::zeros({2, 3}, DType::f32);
    pg.all_gather(in, out);
  });
  EXPECT_CONTAINS(m, "same shape after dim 0");

  m = first_error(2, [](ProcessGroup& pg) {
    Tensor in = Tensor::zeros({1, 2}, DType::f32);
    Tensor out = Tensor::zeros({2, 2}, DType::f64);
    pg.all_gather(in, out);
  });
  EXPECT_CONTAINS(m, "in is f32 but out is f64");

  m = first_error(2, [](ProcessGroup& pg) {
    Tensor t = Tensor::zeros({1}, DType::f32);
    pg.broadcast(t, 2);
  });
  EXPECT_CONTAINS(m, "broadcast");
  EXPECT_CONTAINS(m, "root 2 is not a rank of a group of 2");

  m = first_error(4, [](ProcessGroup& pg) { pg.new_subgroup({0, 1, 2, 3, 4}); });
  EXPECT_CONTAINS(m, "split");
  EXPECT_CONTAINS(m, "rank 4 in [0, 1, 2, 3, 4] is not a rank of a group of 4");

  m = first_error(2, [](ProcessGroup& pg) { pg.split({{0}, {1, 0}}); });
  EXPECT_CONTAINS(m, "rank 0 appears twice in [[0], [1, 0]]");

  m = first_error(2, [](ProcessGroup& pg) { pg.split({{0, 1}, {}}); });
  EXPECT_CONTAINS(m, "list 1 of [[0, 1], []] is empty");

  m = first_error(2, [](ProcessGroup& pg) {
    pg.new_subgroup(pg.rank() == 0 ? std::vector<int>{0, 1} : std::vector<int>{1, 0});
  });
  EXPECT_CONTAINS(m, "the groups differs across ranks: rank 0 [[0, 1]], rank 1 [[1, 0]]");
}

// Sends are copied into the receiver's mailbox: a send before the matching receive on both
// ranks completes (NCCL would need one batch for this), and messages keep their issue order.
TEST(LocalBackend, SendsAreBufferedAndMatchInIssueOrder) {
  run_local(2, [](std::shared_ptr<ProcessGroup> pg) {
    const int r = pg->rank(), peer = 1 - r;
    for (int k = 0; k < 3; ++k) pg->send(Tensor::full({k + 1}, 10 * r + k, DType::i64), peer);
    for (int k = 0; k < 3; ++k) {
      Tensor t = Tensor::zeros({k + 1}, DType::i64);
      pg->recv(t, peer);
      EXPECT_EQ(t.to_vector<int64_t>()[static_cast<size_t>(k)], 10 * peer + k) << "rank " << r;
    }
  });
}

TEST(LocalBackend, PointToPointMismatchNamesBothRanksAndShapes) {
  std::string seen;
  message_of([&] {
    run_local(2, [&](std::shared_ptr<ProcessGroup> pg) {
      if (pg->rank() == 0) {
        pg->send(Tensor::zeros({2, 3}, DType::f32), 1);
        return;
      }
      Tensor t = Tensor::zeros({3, 3}, DType::f32);
      seen = message_of([&] { pg->recv(t, 0); });
    });
  });
  EXPECT_CONTAINS(seen, "batch_p2p (rank 1 of 2");
  EXPECT_CONTAINS(seen, "rank 0 sent f32 [2, 3] but rank 1 receives into f32 [3, 3]");
}

TEST(LocalBackend, ReceivesThatCanNeverBeMatchedFail) {
  std::string seen;
  message_of([&] {
    run_local(2, [&](std::shared_ptr<ProcessGroup> pg) {
      if (pg->rank() == 0) return;  // never sends
      Tensor t = Tensor::zeros({1}, DType::f32);
      seen = message_of([&] { pg->recv(t, 0); });
    });
  });
  EXPECT_CONTAINS(seen, "receives from rank 0 (world rank 0), whose function returned");
  const std::string self = message_of([] {
    run_local(1, [](std::shared_ptr<ProcessGroup> pg) {
      Tensor t = Tensor::zeros({1}, DType::f32);
      pg->recv(t, 0);
    });
  });
  EXPECT_CONTAINS(self, "receives from itself, but no send to itself was issued before");
}

TEST(LocalBackend, AbortReleasesWaitingRanksWithTheReason) {
  std::vector<std::string> seen(3);
  message_of([&] {
    run_local(3, [&](std::shared_ptr<ProcessGroup> pg) {
      const int r = pg->rank();
      if (r == 2) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        pg->abort("out of patience");
        return;
      }
      Tensor t = Tensor::zeros({1}, DType::f32);
      seen[static_cast<size_t>(r)] = message_of([&] { pg->all_reduce(t); });
    });
  });
  for (int r : {0, 1})
    EXPECT_EQ(seen[static_cast<size_t>(r)], "collective aborted: rank 2 failed: out of patience");
}

}  // namespace
}  // namespace moe::dist
