// train/step_profile.h on timelines written by hand, where every figure is known: the device's
// busy time is the union of overlapping work, idle gaps are found and explained (work queued
// mid-gap: the host was late; queued before: it waited on something else), stages get device
// time by the range their launch was made in (self) and every range around it (inclusive), host
// self time excludes the ranges held, and the Chrome trace carries every record.
#include "moe/train/step_profile.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace moe::train {
namespace {

constexpr int64_t kUs = 1000;

TraceSpan span(const std::string& name, int64_t begin_us, int64_t end_us, int depth, uint64_t id,
               int thread = 0) {
  return TraceSpan{name, begin_us * kUs, end_us * kUs, thread, depth, id};
}

DeviceActivity kernel(const std::string& name, int64_t begin_us, int64_t end_us, int64_t launch_us,
                      uint64_t range_id, uint32_t stream = 7) {
  DeviceActivity a;
  a.name = name;
  a.begin_ns = begin_us * kUs;
  a.end_ns = end_us * kUs;
  a.launch_ns = launch_us * kUs;
  a.range_id = range_id;
  a.stream = stream;
  return a;
}

const StageProfile& stage(const StepProfileSummary& s, const std::string& name) {
  for (const StageProfile& st : s.stages)
    if (st.name == name) return st;
  ADD_FAILURE() << "no stage " << name;
  static const StageProfile none;
  return none;
}

// One step from 0 to 1000 us on the host:
//   train_step [0, 1000) id 1
//     layer [10, 500) id 2
//       moe.dispatch [100, 200) id 3
//     optimizer [600, 990) id 4
// Device: k1 [20, 300) from layer, k2 [250, 400) from moe.dispatch on another stream (overlaps
// k1), k3 [700, 800) from optimizer queued at 650 (mid-gap: the gap [400, 700) is the host's),
// k4 [820, 900) queued at 500 (before its gap [800, 820): 20 us, not the host's), k5 [950, 990)
// launched outside every range, queued at 940 (gap [900, 950), host-bound).
struct Timeline {
  std::vector<TraceSpan> spans = {span("train_step", 0, 1000, 0, 1), span("layer", 10, 500, 1, 2),
                                  span("moe.dispatch", 100, 200, 2, 3),
                                  span("optimizer", 600, 990, 1, 4)};
  std::vector<DeviceActivity> activities = {
      kernel("k1", 20, 300, 15, 2), kernel("k2", 250, 400, 150, 3, 9),
      kernel("k3", 700, 800, 650, 4), kernel("k4", 820, 900, 500, 4),
      kernel("k5", 950, 990, 940, 0)};
};

TEST(StepProfile, BusyIdleAndTheGapsCauses) {
  const Timeline t;
  const StepProfileSummary s = summarize_step_profile(t.spans, t.activities);
  EXPECT_EQ(s.begin_ns, 0);
  EXPECT_EQ(s.end_ns, 1000 * kUs);
  EXPECT_EQ(s.steps, 1);
  EXPECT_TRUE(s.has_device);
  EXPECT_EQ(s.activities, 5);
  // Busy: [20, 400) + [700, 800) + [820, 900) + [950, 990) = 380 + 100 + 80 + 40.
  EXPECT_EQ(s.busy_ns, 600 * kUs);
  EXPECT_EQ(s.idle_ns, 400 * kUs);
  // Gaps >= 10 us: [0, 20), [400, 700), [800, 820), [900, 950), [990, 1000): all five.
  EXPECT_EQ(s.gaps, 5);
  EXPECT_EQ(s.gaps_idle_ns, 400 * kUs);
  // Host-bound: [400, 700) (k3 queued at 650) and [900, 950) (k5 at 940); [0, 20) ends with k1
  // queued at 15, mid-gap too.
  EXPECT_EQ(s.host_bound_idle_ns, (300 + 50 + 20) * kUs);

  ASSERT_GE(s.largest_gaps.size(), 2u);
  const IdleGap& big = s.largest_gaps[0];
  EXPECT_EQ(big.begin_ns, 400 * kUs);
  EXPECT_EQ(big.end_ns, 700 * kUs);
  EXPECT_EQ(big.next, "k3");
  EXPECT_EQ(big.next_stage, "train_step > optimizer");
  EXPECT_EQ(big.queued_into_gap_ns, 250 * kUs);
  EXPECT_EQ(big.host_stage, "train_step");  // mid-gap (550 us) the host was between ranges
  const IdleGap& second = s.largest_gaps[1];
  EXPECT_EQ(second.begin_ns, 900 * kUs);
  EXPECT_EQ(second.next, "k5");
  EXPECT_EQ(second.next_stage, "");  // queued outside every range
  EXPECT_EQ(second.host_stage, "train_step > optimizer");
  // The 20 us gap before k4 was not the host's: k4 was queued long before.
  bool found = false;
  for (const IdleGap& g : s.largest_gaps)
    if (g.next == "k4") {
      found = true;
      EXPECT_EQ(g.queued_into_gap_ns, -1);
      EXPECT_EQ(g.end_ns - g.begin_ns, 20 * kUs);
    }
  EXPECT_TRUE(found);
}

TEST(StepProfile, StagesGetHostAndDeviceTime) {
  const Timeline t;
  const StepProfileSummary s = summarize_step_profile(t.spans, t.activities);
  const StageProfile& step = stage(s, "train_step");
  EXPECT_EQ(step.calls, 1);
  EXPECT_EQ(step.host_ns, 1000 * kUs);
  EXPECT_EQ(step.host_self_ns, (1000 - 490 - 390) * kUs);
  EXPECT_EQ(step.device_self_ns, 0);
  EXPECT_EQ(step.device_inclusive_ns, (280 + 150 + 100 + 80) * kUs);
  EXPECT_EQ(step.activities, 4);
  const StageProfile& layer = stage(s, "layer");
  EXPECT_EQ(layer.host_self_ns, (490 - 100) * kUs);
  EXPECT_EQ(layer.device_self_ns, 280 * kUs);
  EXPECT_EQ(layer.device_inclusive_ns, (280 + 150) * kUs);
  const StageProfile& dispatch = stage(s, "moe.dispatch");
  EXPECT_EQ(dispatch.device_self_ns, 150 * kUs);
  EXPECT_EQ(dispatch.device_inclusive_ns, 150 * kUs);
  const StageProfile& opt = stage(s, "optimizer");
  EXPECT_EQ(opt.device_self_ns, 180 * kUs);
  EXPECT_EQ(s.unattributed_device_ns, 40 * kUs);
  // Ordered by inclusive device time.
  EXPECT_EQ(s.stages[0].name, "train_step");
  EXPECT_EQ(s.stages[1].name, "layer");
}

TEST(StepProfile, ASameNameNestedCountsItsHostTimeOnce) {
  const std::vector<TraceSpan> spans = {span("layer", 0, 100, 0, 1), span("layer", 10, 50, 1, 2),
                                        span("other", 60, 70, 1, 3)};
  const std::vector<DeviceActivity> activities = {kernel("k", 20, 30, 15, 2)};
  const StepProfileSummary s = summarize_step_profile(spans, activities);
  const StageProfile& layer = stage(s, "layer");
  EXPECT_EQ(layer.calls, 2);
  EXPECT_EQ(layer.host_ns, 100 * kUs);
  EXPECT_EQ(layer.device_inclusive_ns, 10 * kUs);  // once, not per enclosing layer
  EXPECT_EQ(layer.activities, 1);
}

TEST(StepProfile, ThreadsNestSeparately) {
  // Two threads' ranges overlap in time: a range of thread 1 is not inside thread 0's.
  const std::vector<TraceSpan> spans = {span("a", 0, 100, 0, 1, 0), span("b", 10, 20, 0, 2, 1)};
  const StepProfileSummary s = summarize_step_profile(spans, {});
  EXPECT_EQ(stage(s, "a").host_self_ns, 100 * kUs);
  EXPECT_EQ(stage(s, "b").host_self_ns, 10 * kUs);
}

TEST(StepProfile, HostOnlyAndEmpty) {
  const Timeline t;
  const StepProfileSummary host_only = summarize_step_profile(t.spans, {});
  EXPECT_FALSE(host_only.has_device);
  EXPECT_EQ(host_only.busy_ns, 0);
  EXPECT_EQ(host_only.gaps, 0);
  EXPECT_EQ(stage(host_only, "layer").host_ns, 490 * kUs);
  const std::string text = format_step_profile(host_only, 11, 12, 0, "a CPU run");
  EXPECT_NE(text.find("profile of iterations 11-12 on rank 0: 1 step in 1.00 ms"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("device: no activity recorded (a CPU run)"), std::string::npos) << text;

  const StepProfileSummary empty = summarize_step_profile({}, {});
  EXPECT_EQ(empty.steps, 0);
  EXPECT_TRUE(empty.stages.empty());
}

TEST(StepProfile, MinimumGapAndGapCount) {
  const Timeline t;
  StepProfileOptions o;
  o.min_gap_ns = 40 * kUs;
  o.largest_gaps = 1;
  const StepProfileSummary s = summarize_step_profile(t.spans, t.activities, o);
  EXPECT_EQ(s.idle_ns, 400 * kUs);  // every gap
  EXPECT_EQ(s.gaps, 2);             // [400, 700) and [900, 950)
  EXPECT_EQ(s.gaps_idle_ns, 350 * kUs);
  ASSERT_EQ(s.largest_gaps.size(), 1u);
}

TEST(StepProfile, TheSummaryText) {
  const Timeline t;
  const std::string text =
      format_step_profile(summarize_step_profile(t.spans, t.activities), 5, 5, 3, "");
  EXPECT_NE(text.find("profile of iteration 5 on rank 3: 1 step in 1.00 ms"), std::string::npos)
      << text;
  EXPECT_NE(text.find("device: busy 0.60 ms (60.0%), idle 0.40 ms; 5 gaps"), std::string::npos)
      << text;
  EXPECT_NE(text.find("0.37 ms of it waiting for the host"), std::string::npos) << text;
  EXPECT_NE(text.find("0.300 ms at 0.400: then k3 (train_step > optimizer), queued 0.250 ms into "
                      "the gap; host in train_step"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("queued before the gap"), std::string::npos) << text;
  EXPECT_NE(text.find("the window ends"), std::string::npos) << text;
  EXPECT_NE(text.find("device work queued outside every range: 0.04 ms"), std::string::npos)
      << text;
}

TEST(StepProfile, TheChromeTraceHoldsEveryRecord) {
  const Timeline t;
  const nlohmann::json trace = step_profile_trace(t.spans, t.activities, 2);
  const nlohmann::json& events = trace.at("traceEvents");
  int host = 0, device = 0;
  for (const nlohmann::json& e : events) {
    if (e.at("ph") != "X") continue;
    if (e.at("cat") == "host") {
      ++host;
      EXPECT_EQ(e.at("pid"), 200);
    } else {
      ++device;
      EXPECT_EQ(e.at("cat"), "kernel");
      EXPECT_EQ(e.at("pid"), 201);  // rank 2's GPU 0
    }
    if (e.at("name") == "k3") {
      EXPECT_DOUBLE_EQ(e.at("ts").get<double>(), 700.0);
      EXPECT_DOUBLE_EQ(e.at("dur").get<double>(), 100.0);
      EXPECT_EQ(e.at("tid"), 7);
      EXPECT_EQ(e.at("args").at("stage"), "train_step > optimizer");
      EXPECT_DOUBLE_EQ(e.at("args").at("queued_us_before").get<double>(), 50.0);
    }
    if (e.at("name") == "k5") {
      EXPECT_FALSE(e.at("args").contains("stage"));
    }
  }
  EXPECT_EQ(host, 4);
  EXPECT_EQ(device, 5);
}

TEST(StepProfile, EveryRanksTable) {
  Timeline t;
  t.spans.push_back(span("grad_sync", 500, 600, 1, 5));
  t.spans.push_back(span("moe.dispatch", 300, 350, 2, 6));  // a second dispatch range, in layer
  const RankProfile p = rank_profile(summarize_step_profile(t.spans, t.activities));
  EXPECT_TRUE(p.profiled);
  EXPECT_TRUE(p.has_device);
  EXPECT_EQ(p.steps, 1);
  EXPECT_EQ(p.wall_ns, 1000 * kUs);
  EXPECT_EQ(p.busy_ns, 600 * kUs);
  EXPECT_EQ(p.host_bound_idle_ns, 370 * kUs);
  EXPECT_EQ(p.grad_sync_ns, 100 * kUs);
  EXPECT_EQ(p.pipeline_wait_ns, 0);
  EXPECT_EQ(p.moe_exchange_ns, 150 * kUs);
  // Through the gathered numbers and back.
  const std::vector<double> fields = rank_profile_fields(p);
  ASSERT_EQ(static_cast<int64_t>(fields.size()), kRankProfileFields);
  const RankProfile back = rank_profile_of_fields(fields.data());
  EXPECT_EQ(rank_profile_fields(back), fields);

  RankProfile two_steps = p;
  two_steps.steps = 2;
  const std::string text = format_rank_profiles({p, RankProfile{}, two_steps}, 11, 12);
  EXPECT_NE(text.find("profile of iterations 11-12, every rank"), std::string::npos) << text;
  EXPECT_NE(text.find("       0       1.00        60.0%           0.37        0.10           0.00"
                      "          0.15"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("       1   not profiled"), std::string::npos) << text;
  EXPECT_NE(text.find("       2       0.50        60.0%           0.18        0.05"),
            std::string::npos)
      << text;  // per step
}

}  // namespace
}  // namespace moe::train
