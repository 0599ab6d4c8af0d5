// The pipeline timeline: Megatron's bubble formulas ((p - 1) / m for 1F1B, (p - 1) / (v m)
// interleaved) come out of the simulated schedules, and the text picture of a small case is
// the one drawn here by hand.
#include "moe/train/pipeline_timeline.h"

#include <gtest/gtest.h>

#include <string>

#include "moe/core/error.h"
#include "moe/train/pipeline_schedule.h"

namespace moe::train {
namespace {

TEST(PipelineTimeline, OneFOneBBubbleIsMegatrons) {
  for (int p : {2, 4}) {
    for (int m : {p, p + 1, 2 * p, 3 * p}) {
      SCOPED_TRACE("pp " + std::to_string(p) + " M " + std::to_string(m));
      const PipelineTimeline t = pipeline_timeline(pipeline_schedules(p, m));
      // f = 1, b = 2: the ideal m (f + b) plus the bubble (p - 1)(f + b) on every rank.
      EXPECT_DOUBLE_EQ(t.makespan, (m + p - 1) * 3.0);
      for (int r = 0; r < p; ++r) {
        EXPECT_DOUBLE_EQ(t.busy[r], m * 3.0);
        EXPECT_DOUBLE_EQ(t.idle[r], (p - 1) * 3.0);
        EXPECT_DOUBLE_EQ(t.rank_bubble_fraction[r], double(p - 1) / (m + p - 1));
      }
      EXPECT_DOUBLE_EQ(t.bubble_ratio, double(p - 1) / m);
      EXPECT_DOUBLE_EQ(t.bubble_fraction, double(p - 1) / (m + p - 1));
    }
  }
}

TEST(PipelineTimeline, InterleavedBubbleIsMegatrons) {
  for (int p : {2, 4}) {
    for (int v : {2, 3}) {
      for (int m : {p, 2 * p, 3 * p}) {
        SCOPED_TRACE("pp " + std::to_string(p) + " vpp " + std::to_string(v) + " M " +
                     std::to_string(m));
        const PipelineTimeline t = pipeline_timeline(pipeline_schedules(p, m, v));
        EXPECT_DOUBLE_EQ(t.bubble_ratio, double(p - 1) / (v * m));
        EXPECT_DOUBLE_EQ(t.makespan, (v * m + p - 1) * 3.0);
        // Interleaving shrinks the bubble against 1F1B with the same micro-batches.
        EXPECT_LT(t.bubble_ratio, pipeline_timeline(pipeline_schedules(p, m)).bubble_ratio);
      }
    }
  }
}

TEST(PipelineTimeline, DurationsAndP2pTime) {
  // pp 2, M 1: forward on rank 0, on rank 1, backward on rank 1, on rank 0; each hand-over costs
  // the p2p time.
  const PipelineTimeline t = pipeline_timeline(pipeline_schedules(2, 1), {1.0, 3.0, 0.5});
  EXPECT_DOUBLE_EQ(t.makespan, 1 + 0.5 + 1 + 3 + 0.5 + 3);
  ASSERT_EQ(t.ranks[0].size(), 2u);
  EXPECT_DOUBLE_EQ(t.ranks[0][1].start, 1 + 0.5 + 1 + 3 + 0.5);
  EXPECT_DOUBLE_EQ(t.ranks[1][0].start, 1.5);
  EXPECT_THROW(pipeline_timeline(pipeline_schedules(2, 1), {-1.0, 2.0, 0.0}), moe::Error);
}

TEST(PipelineTimeline, RendersOneFOneB) {
  const std::string text = render_pipeline_timeline(pipeline_timeline(pipeline_schedules(2, 2)));
  EXPECT_EQ(text,
            "pipeline timeline: 2 ranks, makespan 9 (a column = 1); forward a, b, .. = "
            "micro-batch 0, 1, ..; backward A, B, ..; '.' idle\n"
            "rank 0 |ab..AA.BB| idle 3 (33.3%)\n"
            "rank 1 |.aAAbBB..| idle 3 (33.3%)\n"
            "bubble: idle 6 of 18 = 33.3% of the time; idle / busy = 50.0%\n");
}

TEST(PipelineTimeline, RendersChunks) {
  // pp 2, vpp 2, M 2 (the interleaved schedule written out in pipeline_schedule_test.cpp):
  // rank 0 forwards 0.0 1.0 0.1 1.1 back to back (rank 1's chunk-0 outputs arrive in time).
  const std::string text = render_pipeline_timeline(pipeline_timeline(pipeline_schedules(2, 2, 2)));
  EXPECT_NE(text.find("rank 0 |abab"), std::string::npos) << text;
  EXPECT_NE(text.find("       |0011"), std::string::npos) << text;
  EXPECT_NE(text.find("| chunk\n"), std::string::npos) << text;
  EXPECT_NE(text.find("idle / busy = 25.0%"), std::string::npos) << text;  // 1 / (2 x 2)
}

TEST(PipelineTimeline, DeadlockedListsHaveNoTimeline) {
  auto s = pipeline_schedules(2, 2);
  s[1].erase(s[1].begin());  // rank 1 never receives mb 0's activation
  EXPECT_THROW(pipeline_timeline(s), moe::Error);
}

}  // namespace
}  // namespace moe::train
