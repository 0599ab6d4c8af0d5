// core/device_activity.h without a GPU (a CPU build, or a CUDA build on a machine without one):
// start() records nothing and says why; stop() then returns nothing. (With a GPU:
// device_activity_cuda_test.cpp.)
#include "moe/core/device_activity.h"

#include <gtest/gtest.h>

#include "moe/core/device.h"

namespace moe {
namespace {

TEST(DeviceActivity, WithoutAGpuNothingIsRecordedAndTheReasonIsGiven) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present: device_activity_cuda_test.cpp";
  const std::string why = DeviceActivityRecorder::start();
  EXPECT_NE(why.find("only the host's ranges are recorded"), std::string::npos) << why;
  int64_t dropped = -1;
  EXPECT_TRUE(DeviceActivityRecorder::stop(&dropped).empty());
  EXPECT_EQ(dropped, 0);
}

}  // namespace
}  // namespace moe
