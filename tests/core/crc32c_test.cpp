#include <gtest/gtest.h>

#include <string>

#include "moe/core/crc32c.h"

namespace moe {
namespace {

TEST(Crc32c, KnownAnswers) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32c(check.data(), check.size()), 0xE3069283u);  // the standard check value
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  // Continuing a checksum over a split input gives the checksum of the whole.
  const uint32_t first = crc32c(check.data(), 4);
  EXPECT_EQ(crc32c(check.data() + 4, check.size() - 4, first), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
}

}  // namespace
}  // namespace moe
