// The NCCL backend's entry points without a GPU: arguments are checked before anything else
// (naming the rank), and a build without NCCL says so instead of failing obscurely.
#include "common/check.h"
#include "moe/dist/nccl_backend.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>

namespace moe::dist {
namespace {

using ::moe::test::message_of;

TEST(NcclBackend, RankOutsideTheWorld) {
  const NcclUniqueId id{};
  const std::string m = message_of([&] { make_nccl_world(id, 2, 2, 0); });
  EXPECT_NE(m.find("rank 2 is not a rank of a world of 2"), std::string::npos) << m;
  EXPECT_NE(message_of([&] { make_nccl_world(id, -1, 2, 0); }), "");
  EXPECT_NE(message_of([&] { make_nccl_world(id, 0, 0, 0); }), "");
}

TEST(NcclBackend, DefaultsFollowMegatron) {
  const NcclOptions options;
  EXPECT_EQ(options.timeout, std::chrono::minutes(10));  // --distributed-timeout-minutes 10
  EXPECT_TRUE(options.exit_on_failure);
}

TEST(NcclBackend, BuildWithoutNccl) {
  if (nccl_built()) GTEST_SKIP() << "this build has NCCL";
  EXPECT_EQ(nccl_version(), 0);
  std::string m = message_of([] { nccl_unique_id(); });
  EXPECT_NE(m.find("this build has no NCCL"), std::string::npos) << m;
  m = message_of([] { make_nccl_world(NcclUniqueId{}, 0, 1, 0); });
  EXPECT_NE(m.find("this build has no NCCL"), std::string::npos) << m;
}

}  // namespace
}  // namespace moe::dist
