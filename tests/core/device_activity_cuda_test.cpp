// core/device_activity.h on a GPU: kernels, copies and memsets queued inside recorded ranges come
// back with their times on the host's trace clock (after their launch, inside the recording),
// the id of the innermost range they were queued in, and their kind; work outside the recording
// does not; a second recording works as the first.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/check.h"
#include "moe/core/device.h"
#include "moe/core/device_activity.h"
#include "moe/core/tensor.h"
#include "moe/core/trace_range.h"
#include "moe/core/trace_recorder.h"

namespace moe {
namespace {

uint64_t id_of(const std::vector<TraceSpan>& spans, const std::string& name) {
  for (const TraceSpan& s : spans)
    if (s.name == name) return s.id;
  ADD_FAILURE() << "no span " << name;
  return 0;
}

TEST(DeviceActivityCuda, RecordsWorkWithItsRangeAndTimes) {
  MOE_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  Tensor warm = Tensor::zeros({16}, DType::f32, gpu);  // the context exists before the window
  (void)warm.to_double_vector();

  ASSERT_TRUE(TraceRecorder::start());
  const int64_t window_begin = trace_clock_ns();
  const std::string why = DeviceActivityRecorder::start();
  ASSERT_EQ(why, "") << why;
  std::vector<double> host;
  {
    const TraceRange outer("outer");
    Tensor a;
    {
      const TraceRange fill("fill");
      a = Tensor::from_vector<float>(std::vector<float>(1 << 16, 1.5f), {1 << 16}, gpu);  // HtoD
    }
    const TraceRange read("read");
    host = a.to_double_vector();  // DtoH
  }
  int64_t dropped = -1;
  const std::vector<DeviceActivity> activities = DeviceActivityRecorder::stop(&dropped);
  const int64_t window_end = trace_clock_ns();
  const std::vector<TraceSpan> spans = TraceRecorder::stop();
  EXPECT_EQ(dropped, 0);
  ASSERT_EQ(host.size(), 1u << 16);
  EXPECT_EQ(host[7], 1.5);

  bool htod = false, dtoh = false;
  for (const DeviceActivity& a : activities) {
    EXPECT_LE(a.begin_ns, a.end_ns) << a.name;
    EXPECT_GE(a.begin_ns, window_begin) << a.name;
    EXPECT_LE(a.end_ns, window_end) << a.name;
    if (a.launch_ns >= 0) {
      EXPECT_LE(a.launch_ns, a.begin_ns) << a.name;
    }
    if (a.name == "memcpy HtoD" && a.bytes == (4 << 16)) {
      htod = true;
      EXPECT_EQ(a.kind, DeviceActivity::Kind::memcpy);
      EXPECT_EQ(a.range_id, id_of(spans, "fill"));
      EXPECT_GE(a.launch_ns, 0);
    }
    if (a.name == "memcpy DtoH" && a.bytes == (4 << 16)) {
      dtoh = true;
      EXPECT_EQ(a.range_id, id_of(spans, "read"));
    }
  }
  EXPECT_TRUE(htod) << activities.size() << " activities";
  EXPECT_TRUE(dtoh) << activities.size() << " activities";
  for (size_t i = 1; i < activities.size(); ++i)
    EXPECT_LE(activities[i - 1].begin_ns, activities[i].begin_ns);
}

TEST(DeviceActivityCuda, KernelsOutsideTheRecordingAreLeftOutAndItRecordsAgain) {
  MOE_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  Tensor before = Tensor::zeros({1 << 12}, DType::f32, gpu);
  (void)before.to_double_vector();
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(TraceRecorder::start());
    ASSERT_EQ(DeviceActivityRecorder::start(), "");
    EXPECT_NE(DeviceActivityRecorder::start(), "");  // one recording at a time
    Tensor t;
    {
      const TraceRange r("zeros");
      t = Tensor::zeros({1 << 12}, DType::f32, gpu);
    }
    const std::vector<DeviceActivity> activities = DeviceActivityRecorder::stop();
    const std::vector<TraceSpan> spans = TraceRecorder::stop();
    ASSERT_FALSE(activities.empty()) << "round " << round;
    for (const DeviceActivity& a : activities) EXPECT_EQ(a.range_id, id_of(spans, "zeros"));
  }
  Tensor after = Tensor::zeros({1 << 12}, DType::f32, gpu);  // not recorded: no crash, no record
  (void)after.to_double_vector();
  EXPECT_TRUE(DeviceActivityRecorder::stop().empty());
}

}  // namespace
}  // namespace moe
