// Event without a GPU: a never-recorded event is complete, moves keep that state, and in a
// build without CUDA every operation that would need the device says so.
#include "moe/core/event.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "moe/core/device.h"

namespace moe {
namespace {

TEST(Event, NeverRecordedIsComplete) {
  Event event;
  EXPECT_FALSE(event.recorded());
  EXPECT_TRUE(event.query());
  EXPECT_EQ(event.device_index(), -1);
  EXPECT_EQ(event.handle(), nullptr);
  Event moved(std::move(event));
  EXPECT_FALSE(moved.recorded());
  EXPECT_TRUE(moved.query());
  event = std::move(moved);
  EXPECT_FALSE(event.recorded());
}

TEST(Event, WithoutCudaEveryDeviceOperationThrows) {
  if (cuda_built()) GTEST_SKIP() << "this build has CUDA";
  Event event;
  auto expect_no_cuda = [](auto&& call, const char* what) {
    try {
      call();
      ADD_FAILURE() << what << " did not throw";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("this build has no CUDA"), std::string::npos)
          << what << ": " << e.what();
    }
  };
  expect_no_cuda([&] { event.record(0, nullptr); }, "record");
  expect_no_cuda([&] { event.block(nullptr); }, "block");
  expect_no_cuda([&] { event.synchronize(); }, "synchronize");
  EXPECT_FALSE(event.recorded());
}

}  // namespace
}  // namespace moe
