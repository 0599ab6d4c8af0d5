// The pipeline schedules against Megatron's order worked out here independently (closed-form
// virtual micro-batch -> (micro-batch, chunk), the phase lengths written out per rank), against
// lists written by hand from Megatron's loops, and the checker against corrupted lists.
#include "moe/train/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "moe/core/error.h"

namespace moe::train {
namespace {

using K = PipelineActionKind;
using Schedules = std::vector<std::vector<PipelineAction>>;

// A compute step as the expected order lists it.
struct Step {
  char kind;  // 'F' or 'B'
  int microbatch;
  int chunk;
  bool operator==(const Step&) const = default;
};

std::ostream& operator<<(std::ostream& out, const Step& s) {
  return out << s.kind << s.microbatch << "." << s.chunk;
}

// Megatron's virtual micro-batch k (0 <= k < M v) in closed form: groups of G micro-batches,
// the last one (group floor((M-1)/G)) holding the M - G floor((M-1)/G) left; inside a group of
// size L, offset o: micro-batch (group start) + o mod L on chunk o / L.
Step virtual_forward(int k, int m_count, int v, int group) {
  const int last_group = (m_count - 1) / group;
  const int g = std::min(k / (group * v), last_group);
  const int size = g == last_group ? m_count - g * group : group;
  const int o = k - g * group * v;
  return {'F', g * group + o % size, o / size};
}

// The compute order of rank r from Megatron's phase structure: W warm-up forwards, then pairs
// (forward W + k, backward k), then the remaining backwards; backward k runs the chunks in
// reverse (v - 1 - chunk of forward k).
std::vector<Step> expected_order(int pp, int r, int m_count, int v, int group, bool fwd_only) {
  const int total = m_count * v;
  int warmup = v == 1 ? pp - r - 1 : 2 * (pp - r - 1) + (v - 1) * group;
  if (fwd_only || warmup > total) warmup = total;
  auto f = [&](int k) { return virtual_forward(k, m_count, v, group); };
  auto b = [&](int k) {
    const Step s = f(k);
    return Step{'B', s.microbatch, v - 1 - s.chunk};
  };
  std::vector<Step> out;
  for (int k = 0; k < warmup; ++k) out.push_back(f(k));
  for (int k = 0; k < total - warmup; ++k) {
    out.push_back(f(warmup + k));
    out.push_back(b(k));
  }
  if (!fwd_only)
    for (int k = total - warmup; k < total; ++k) out.push_back(b(k));
  return out;
}

std::vector<Step> compute_order(const std::vector<PipelineAction>& list) {
  std::vector<Step> out;
  for (const auto& a : list) {
    if (a.kind == K::forward) out.push_back({'F', a.microbatch, a.chunk});
    if (a.kind == K::backward) out.push_back({'B', a.microbatch, a.chunk});
  }
  return out;
}

bool megatron_accepts(int pp, int m_count, int v, int group) {
  if (v == 1) return true;
  return pp > 1 && group >= pp && group <= m_count &&
         (m_count % group == 0 || m_count % group >= pp);
}

// Runs fn and returns the moe::Error's message ("" when it does not throw).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const moe::Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_HAS(stmt, text)                                            \
  do {                                                                          \
    const std::string msg_ = error_of([&] { stmt; });                           \
    EXPECT_NE(msg_.find(text), std::string::npos) << "error: '" << msg_ << "'"; \
  } while (0)

PipelineAction p2p(K kind, int mb, int chunk, int peer, int batch) {
  return {kind, mb, chunk, peer, batch};
}
PipelineAction fwd(int mb, int chunk = 0) {
  return {K::forward, mb, chunk, -1, -1};
}
PipelineAction bwd(int mb, int chunk = 0) {
  return {K::backward, mb, chunk, -1, -1};
}

TEST(PipelineSchedule, ComputeOrderIsMegatrons) {
  struct Case {
    int pp, v, m, group;
  };
  std::vector<Case> cases;
  for (int pp : {2, 4}) {
    for (int m : {pp, pp + 1, 2 * pp, 3 * pp}) cases.push_back({pp, 1, m, pp});
    for (int m : {pp, 2 * pp, 3 * pp}) cases.push_back({pp, 2, m, pp});
  }
  cases.push_back({4, 2, 5, 5});   // pp + 1 micro-batches: legal with one group of 5
  cases.push_back({2, 2, 5, 3});   // groups of 3 then 2
  cases.push_back({4, 3, 12, 4});  // three chunks
  cases.push_back({4, 2, 12, 6});  // groups larger than pp
  for (const Case& c : cases) {
    for (bool fwd_only : {false, true}) {
      SCOPED_TRACE("pp " + std::to_string(c.pp) + " vpp " + std::to_string(c.v) + " M " +
                   std::to_string(c.m) + " group " + std::to_string(c.group) +
                   (fwd_only ? " forward-only" : ""));
      const Schedules all = pipeline_schedules(c.pp, c.m, c.v, c.group, fwd_only);
      for (int r = 0; r < c.pp; ++r)
        EXPECT_EQ(compute_order(all[r]), expected_order(c.pp, r, c.m, c.v, c.group, fwd_only))
            << "rank " << r;
      EXPECT_NO_THROW(check_pipeline_schedules(all, c.m, c.v, fwd_only));
    }
  }
}

TEST(PipelineSchedule, WarmupCounts) {
  // 1F1B, pp 4, M 8: ranks 0..3 run 3, 2, 1, 0 forwards before their first backward.
  for (int r = 0; r < 4; ++r) {
    const auto order = compute_order(pipeline_schedule(4, r, 8));
    int leading = 0;
    while (order[leading].kind == 'F') ++leading;
    EXPECT_EQ(leading, 4 - r - 1 + 1) << "rank " << r;  // warm-up, then the first steady forward
  }
  // Interleaved, pp 4, vpp 2, M 8: 2 (p - r - 1) + (v - 1) p = 10, 8, 6, 4 warm-up forwards.
  for (int r = 0; r < 4; ++r) {
    const auto order = compute_order(pipeline_schedule(4, r, 8, 2));
    int leading = 0;
    while (order[leading].kind == 'F') ++leading;
    EXPECT_EQ(leading, 2 * (4 - r - 1) + 4 + 1) << "rank " << r;
  }
  // Capped at the total: pp 4, M 2: rank 0 forwards both, then backwards both.
  EXPECT_EQ(compute_order(pipeline_schedule(4, 0, 2)),
            (std::vector<Step>{{'F', 0, 0}, {'F', 1, 0}, {'B', 0, 0}, {'B', 1, 0}}));
}

TEST(PipelineSchedule, MegatronsDocumentedChunkOrders) {
  // Megatron's --microbatch-group-size-per-virtual-pipeline-stage help, PP 2 VP 2:
  // group 2, M 4: 0 1 0 1 2 3 2 3; group 3, M 5: 0 1 2 0 1 2 3 4 3 4 (forward micro-batches).
  auto forwards = [](int m, int group) {
    std::vector<int> mbs, chunks;
    for (const auto& a : pipeline_schedule(2, 0, m, 2, group, /*forward_only=*/true)) {
      if (a.kind != K::forward) continue;
      mbs.push_back(a.microbatch);
      chunks.push_back(a.chunk);
    }
    return std::pair{mbs, chunks};
  };
  EXPECT_EQ(forwards(4, 2).first, (std::vector<int>{0, 1, 0, 1, 2, 3, 2, 3}));
  EXPECT_EQ(forwards(4, 2).second, (std::vector<int>{0, 0, 1, 1, 0, 0, 1, 1}));
  EXPECT_EQ(forwards(5, 3).first, (std::vector<int>{0, 1, 2, 0, 1, 2, 3, 4, 3, 4}));
  EXPECT_EQ(forwards(5, 3).second, (std::vector<int>{0, 0, 0, 1, 1, 1, 0, 0, 1, 1}));
}

TEST(PipelineSchedule, OneFOneBByHand) {
  // Megatron's forward_backward_pipelining_without_interleaving for pp 2, M 3, step by step.
  // clang-format off
  const std::vector<PipelineAction> rank0 = {
      fwd(0), p2p(K::send_forward, 0, 0, 1, 0),                                    // warm-up
      fwd(1), p2p(K::send_forward, 1, 0, 1, 1), p2p(K::recv_backward, 0, 0, 1, 1), // steady
      bwd(0),
      fwd(2), p2p(K::send_forward, 2, 0, 1, 2), p2p(K::recv_backward, 1, 0, 1, 2),
      bwd(1),
      p2p(K::recv_backward, 2, 0, 1, 3), bwd(2),                                   // cool-down
  };
  const std::vector<PipelineAction> rank1 = {
      p2p(K::recv_forward, 0, 0, 0, 0),
      fwd(0), bwd(0), p2p(K::recv_forward, 1, 0, 0, 1), p2p(K::send_backward, 0, 0, 0, 1),
      fwd(1), bwd(1), p2p(K::recv_forward, 2, 0, 0, 2), p2p(K::send_backward, 1, 0, 0, 2),
      fwd(2), bwd(2), p2p(K::send_backward, 2, 0, 0, 3),
  };
  // clang-format on
  EXPECT_EQ(pipeline_schedule(2, 0, 3), rank0);
  EXPECT_EQ(pipeline_schedule(2, 1, 3), rank1);
  const Schedules both = {rank0, rank1};
  EXPECT_NO_THROW(check_pipeline_schedules(both, 3));

  // Forward-only: separate send / receive calls, no backward traffic.
  const std::vector<PipelineAction> eval0 = {fwd(0), p2p(K::send_forward, 0, 0, 1, 0), fwd(1),
                                             p2p(K::send_forward, 1, 0, 1, 1)};
  const std::vector<PipelineAction> eval1 = {p2p(K::recv_forward, 0, 0, 0, 0), fwd(0),
                                             p2p(K::recv_forward, 1, 0, 0, 1), fwd(1)};
  EXPECT_EQ(pipeline_schedule(2, 0, 2, 1, 0, true), eval0);
  EXPECT_EQ(pipeline_schedule(2, 1, 2, 1, 0, true), eval1);
  const Schedules eval = {eval0, eval1};
  EXPECT_NO_THROW(check_pipeline_schedules(eval, 2, 1, true));
}

TEST(PipelineSchedule, InterleavedByHand) {
  // Megatron's interleaved schedule for pp 2, vpp 2, M 2 (group 2): T = 4 virtual micro-batches
  // (0.0 1.0 0.1 1.1); rank 0 warms up all 4, rank 1 warms up 2. Rank 0 receives rank 1's chunk
  // 0 outputs as its chunk 1 inputs one step behind (pp - 1); the last rank receives rank 0's
  // chunk-1 gradients as its chunk-0 output gradients likewise.
  // clang-format off
  const std::vector<PipelineAction> rank0 = {
      // warm-up: all four forwards
      fwd(0, 0), p2p(K::send_forward, 0, 0, 1, 0),
      fwd(1, 0), p2p(K::send_forward, 1, 0, 1, 1), p2p(K::recv_forward, 0, 1, 1, 1),
      fwd(0, 1), p2p(K::send_forward, 0, 1, 1, 2), p2p(K::recv_forward, 1, 1, 1, 2),
      fwd(1, 1), p2p(K::send_forward, 1, 1, 1, 3),
      // cool-down: the first gradient alone, then each backward's send with the next receive
      p2p(K::recv_backward, 0, 1, 1, 4),
      bwd(0, 1), p2p(K::send_backward, 0, 1, 1, 5), p2p(K::recv_backward, 1, 1, 1, 5),
      bwd(1, 1), p2p(K::send_backward, 1, 1, 1, 6), p2p(K::recv_backward, 0, 0, 1, 6),
      bwd(0, 0), p2p(K::recv_backward, 1, 0, 1, 7),
      bwd(1, 0),
  };
  const std::vector<PipelineAction> rank1 = {
      p2p(K::recv_forward, 0, 0, 0, 0),
      // warm-up: two forwards
      fwd(0, 0), p2p(K::send_forward, 0, 0, 0, 1), p2p(K::recv_forward, 1, 0, 0, 1),
      fwd(1, 0), p2p(K::send_forward, 1, 0, 0, 2), p2p(K::recv_forward, 0, 1, 0, 2),
      // steady: forward, backward, then the step's tensors in one batch
      fwd(0, 1), bwd(0, 1), p2p(K::recv_forward, 1, 1, 0, 3), p2p(K::send_backward, 0, 1, 0, 3),
      fwd(1, 1), bwd(1, 1), p2p(K::send_backward, 1, 1, 0, 4), p2p(K::recv_backward, 0, 0, 0, 4),
      // cool-down
      bwd(0, 0), p2p(K::send_backward, 0, 0, 0, 5), p2p(K::recv_backward, 1, 0, 0, 5),
      bwd(1, 0), p2p(K::send_backward, 1, 0, 0, 6),
  };
  // clang-format on
  EXPECT_EQ(pipeline_schedule(2, 0, 2, 2), rank0);
  EXPECT_EQ(pipeline_schedule(2, 1, 2, 2), rank1);
  const Schedules both = {rank0, rank1};
  EXPECT_NO_THROW(check_pipeline_schedules(both, 2, 2));
}

TEST(PipelineSchedule, EndsOfThePipelineHaveNoOuterTraffic) {
  for (int v : {1, 2}) {
    const Schedules all = pipeline_schedules(4, 8, v);
    for (int r = 0; r < 4; ++r) {
      for (const auto& a : all[r]) {
        const int stage = a.chunk * 4 + r;
        if (stage == 0) {
          EXPECT_NE(a.kind, K::recv_forward) << describe(a);
          EXPECT_NE(a.kind, K::send_backward) << describe(a);
        }
        if (stage == 4 * v - 1) {
          EXPECT_NE(a.kind, K::send_forward) << describe(a);
          EXPECT_NE(a.kind, K::recv_backward) << describe(a);
        }
      }
    }
  }
  // vpp 1: the first rank sends activations / receives gradients only, the last the reverse.
  int first_recv = 0, last_send = 0;
  for (const auto& a : pipeline_schedule(4, 0, 8))
    first_recv += a.kind == K::recv_forward || a.kind == K::send_backward;
  for (const auto& a : pipeline_schedule(4, 3, 8))
    last_send += a.kind == K::send_forward || a.kind == K::recv_backward;
  EXPECT_EQ(first_recv, 0);
  EXPECT_EQ(last_send, 0);
}

TEST(PipelineSchedule, ForwardOnlyRunsForwardsOnly) {
  for (int v : {1, 2}) {
    const Schedules all = pipeline_schedules(4, 8, v, 0, /*forward_only=*/true);
    for (int r = 0; r < 4; ++r) {
      int forwards = 0;
      for (const auto& a : all[r]) {
        EXPECT_TRUE(a.kind == K::forward || a.kind == K::send_forward || a.kind == K::recv_forward)
            << describe(a);
        forwards += a.kind == K::forward;
      }
      EXPECT_EQ(forwards, 8 * v);
    }
    EXPECT_NO_THROW(check_pipeline_schedules(all, 8, v, true));
    // A training schedule is not a forward-only one.
    EXPECT_ERROR_HAS(check_pipeline_schedules(pipeline_schedules(4, 8, v), 8, v, true),
                     "forward-only");
  }
}

TEST(PipelineSchedule, EveryLegalShapeChecksOut) {
  for (int pp : {1, 2, 3, 4, 8}) {
    for (int v : {1, 2, 3}) {
      for (int m = 1; m <= 3 * pp + 2; ++m) {
        for (int group : {0, pp + 1, 2 * pp}) {
          if (v == 1 && group != 0) continue;
          for (bool fo : {false, true}) {
            const int g = group == 0 ? pp : group;
            SCOPED_TRACE("pp " + std::to_string(pp) + " vpp " + std::to_string(v) + " M " +
                         std::to_string(m) + " group " + std::to_string(g) + (fo ? " eval" : ""));
            if (!megatron_accepts(pp, m, v, g)) {
              EXPECT_THROW(pipeline_schedules(pp, m, v, group, fo), moe::Error);
              continue;
            }
            const Schedules all = pipeline_schedules(pp, m, v, group, fo);
            for (int r = 0; r < pp; ++r)
              ASSERT_EQ(compute_order(all[r]), expected_order(pp, r, m, v, g, fo));
            ASSERT_NO_THROW(check_pipeline_schedules(all, m, v, fo));
          }
        }
      }
    }
  }
}

TEST(PipelineSchedule, RefusesWhatMegatronRefuses) {
  // vpp > 1 needs M >= the group size >= pp (default group: pp).
  EXPECT_ERROR_HAS(pipeline_schedule(4, 0, 3, 2), "micro-batches 3");
  EXPECT_ERROR_HAS(pipeline_schedule(4, 0, 3, 2), "must lie in [pipeline size 4");
  EXPECT_ERROR_HAS(pipeline_schedule(4, 0, 8, 2, 3), "got 3");
  // A last group shorter than pp: M 5 = 4 + 1, M 6 = 4 + 2 with pp 4.
  EXPECT_ERROR_HAS(pipeline_schedule(4, 0, 5, 2), "last group of 1");
  EXPECT_ERROR_HAS(pipeline_schedule(4, 0, 6, 2), "last group of 2");
  EXPECT_NO_THROW(pipeline_schedule(4, 0, 5, 2, 5));  // one group of 5
  EXPECT_NO_THROW(pipeline_schedule(4, 0, 5, 1));     // 1F1B takes any M
  EXPECT_ERROR_HAS(pipeline_schedule(1, 0, 4, 2), "needs --pipeline-model-parallel-size > 1");
  EXPECT_ERROR_HAS(pipeline_schedule(4, 4, 8), "pipeline rank 4 outside 0..3");
  EXPECT_ERROR_HAS(pipeline_schedule(4, 0, 0), "micro-batches must be >= 1");
  EXPECT_ERROR_HAS(pipeline_schedule(0, 0, 4), "must be >= 1");
}

// ---- the checker must fail on broken lists --------------------------------------------------

Schedules training(int pp, int m, int v) {
  return pipeline_schedules(pp, m, v);
}

int find(const std::vector<PipelineAction>& list, K kind, int mb, int chunk = 0) {
  for (size_t i = 0; i < list.size(); ++i)
    if (list[i].kind == kind && list[i].microbatch == mb && list[i].chunk == chunk)
      return static_cast<int>(i);
  ADD_FAILURE() << "no " << pipeline_action_kind_name(kind) << " mb " << mb;
  return 0;
}

TEST(PipelineScheduleCheck, FailsOnADroppedReceive) {
  for (int v : {1, 2}) {
    Schedules s = training(4, 8, v);
    auto& r1 = s[1];
    r1.erase(r1.begin() + find(r1, K::recv_forward, 3));
    EXPECT_ERROR_HAS(check_pipeline_schedules(s, 8, v), "rank 1 lacks recv_forward of mb 3");
    // The run alone (no static pass) sees the unmatched send instead.
    EXPECT_THROW(run_pipeline_schedules(s), moe::Error);
  }
}

TEST(PipelineScheduleCheck, FailsOnASwappedForwardAndBackward) {
  for (int v : {1, 2}) {
    Schedules s = training(4, 8, v);
    auto& r0 = s[0];
    const int f = find(r0, K::forward, 0, 0);
    const int b = find(r0, K::backward, 0, 0);
    std::swap(r0[f], r0[b]);
    EXPECT_ERROR_HAS(check_pipeline_schedules(s, 8, v), "rank 0 backwards mb 0 chunk 0");
  }
}

TEST(PipelineScheduleCheck, FailsOnASendToTheWrongPeer) {
  for (int v : {1, 2}) {
    Schedules s = training(4, 8, v);
    s[1][find(s[1], K::send_forward, 2)].peer_rank = 0;
    EXPECT_ERROR_HAS(check_pipeline_schedules(s, 8, v), "talks to rank 0");
    // Running it: rank 0 gets an activation where it expects a gradient, or waits forever.
    EXPECT_THROW(run_pipeline_schedules(s), moe::Error);
  }
}

TEST(PipelineScheduleCheck, FailsOnSendsOutOfOrder) {
  // Rank 0 forwards (and sends) micro-batches 1 and 0 swapped: each of its own actions is in
  // order, but the first activation rank 1 receives is not the one it expects.
  Schedules s = pipeline_schedules(2, 3, 1, 0, /*forward_only=*/true);
  auto& r0 = s[0];  // F0 send0 F1 send1 F2 send2
  std::swap(r0[0].microbatch, r0[2].microbatch);
  std::swap(r0[1].microbatch, r0[3].microbatch);
  EXPECT_ERROR_HAS(check_pipeline_schedules(s, 3, 1, true),
                   "send_forward mb 1 chunk 0 -> rank 1 (batch 0)) meets rank 1 action 0 "
                   "(recv_forward mb 0");
}

TEST(PipelineScheduleCheck, FailsOnADeadlock) {
  // Split the batched pairs of 1F1B and put each rank's receive before its send: rank 0 waits
  // for the gradient of mb 0, which rank 1 sends only after receiving mb 1's activation, which
  // rank 0 sends only after that gradient.
  Schedules s = training(2, 3, 1);
  auto split = [](std::vector<PipelineAction>& list, int send_at, int recv_at, int batch) {
    PipelineAction send = list[send_at], recv = list[recv_at];
    send.batch = batch + 1;
    recv.batch = batch;
    const int lo = std::min(send_at, recv_at);
    list[lo] = recv;
    list[lo + 1] = send;
  };
  split(s[0], find(s[0], K::send_forward, 1), find(s[0], K::recv_backward, 0), 100);
  split(s[1], find(s[1], K::send_backward, 0), find(s[1], K::recv_forward, 1), 100);
  EXPECT_ERROR_HAS(check_pipeline_schedules(s, 3), "deadlock");
  EXPECT_ERROR_HAS(check_pipeline_schedules(s, 3), "rank 0 action 3 (recv_backward mb 0");
  // Batched together as generated, the same exchange runs.
  EXPECT_NO_THROW(check_pipeline_schedules(training(2, 3, 1), 3));
}

TEST(PipelineScheduleCheck, FailsOnRepeatsAndScatteredBatches) {
  Schedules s = training(4, 8, 2);
  s[2].push_back(s[2][find(s[2], K::forward, 5, 1)]);
  EXPECT_ERROR_HAS(check_pipeline_schedules(s, 8, 2), "repeats action");

  s = training(4, 8, 1);
  auto& r2 = s[2];
  // Give a later lone send the batch number of an earlier one.
  const int a = find(r2, K::send_backward, 6);
  const int b = find(r2, K::send_backward, 7);
  r2[b].batch = r2[a].batch;
  EXPECT_ERROR_HAS(check_pipeline_schedules(s, 8, 1), "a batch must be adjacent");
}

}  // namespace
}  // namespace moe::train
