// Event on the GPU: record / query / synchronize, block ordering one stream after another
// (checked against a stream held by a StreamGate, so "still running" is certain), moves, reuse,
// and the current device left as it was.
#include <gtest/gtest.h>

#include <utility>

#include "common/check.h"
#include "core/event_testing.h"
#include "moe/core/device.h"
#include "moe/core/event.h"

namespace moe {
namespace {

int current_device() {
  int device = -1;
  EXPECT_EQ(cudaGetDevice(&device), cudaSuccess);
  return device;
}

TEST(EventCuda, RecordQuerySynchronize) {
  MOE_REQUIRE_GPU();
  test::TestStream stream;
  Event event;
  {
    test::StreamGate gate(stream.handle());
    event.record(0, stream.handle());
    EXPECT_TRUE(event.recorded());
    EXPECT_EQ(event.device_index(), 0);
    test::settle();
    EXPECT_FALSE(event.query()) << "an event behind a held stream reports completion";
    gate.release();
    event.synchronize();
    EXPECT_TRUE(gate.passed());
  }
  EXPECT_TRUE(event.query());
  // Recording again reuses the event.
  const EventHandle handle = event.handle();
  event.record(0, stream.handle());
  event.synchronize();
  EXPECT_EQ(event.handle(), handle);
  EXPECT_TRUE(event.query());
}

TEST(EventCuda, BlockOrdersAnotherStream) {
  MOE_REQUIRE_GPU();
  test::TestStream first, second;
  test::StreamGate gate(first.handle());
  Event produced;
  produced.record(0, first.handle());
  produced.block(second.handle());  // the host goes on
  Event consumed;
  consumed.record(0, second.handle());
  test::settle();
  EXPECT_FALSE(consumed.query()) << "the second stream did not wait for the first";
  gate.release();
  consumed.synchronize();
  EXPECT_TRUE(produced.query());
  // A never-recorded event blocks nothing.
  Event never;
  never.block(second.handle());
  Event after;
  after.record(0, second.handle());
  after.synchronize();
}

TEST(EventCuda, MovesTransferOwnership) {
  MOE_REQUIRE_GPU();
  test::TestStream stream;
  Event a;
  a.record(0, stream.handle());
  const EventHandle handle = a.handle();
  Event b(std::move(a));
  EXPECT_FALSE(a.recorded());
  EXPECT_EQ(b.handle(), handle);
  Event c;
  c.record(0, stream.handle());
  c = std::move(b);  // c's own event is destroyed
  EXPECT_EQ(c.handle(), handle);
  c.synchronize();
  c = Event();
  EXPECT_FALSE(c.recorded());
  EXPECT_TRUE(c.query());
}

TEST(EventCuda, RecordsOnTheStreamsDeviceAndRestoresTheCurrentDevice) {
  MOE_REQUIRE_GPU();
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  test::TestStream on0;
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  test::TestStream on1;
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  Event event;
  event.record(1, on1.handle());  // created on device 1 while device 0 is current
  EXPECT_EQ(event.device_index(), 1);
  EXPECT_EQ(current_device(), 0);
  event.block(on0.handle());  // cross-device wait
  event.synchronize();
  event.record(0, on0.handle());  // replaced by an event of device 0
  EXPECT_EQ(event.device_index(), 0);
  event.synchronize();
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  event = Event();  // destroyed with its own device current, then device 1 again
  EXPECT_EQ(current_device(), 1);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
}

}  // namespace
}  // namespace moe
