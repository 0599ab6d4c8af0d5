// core/trace_range.h: traced() gives back what its function returns (values, references and
// nothing), and lets an exception through with the range closed.
#include "moe/core/trace_range.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace moe {
namespace {

TEST(TraceRange, TracedReturnsWhatTheFunctionReturns) {
  EXPECT_EQ(traced("value", [] { return 42; }), 42);
  EXPECT_EQ(traced("string", [] { return std::string("moe"); }), "moe");
  int x = 1;
  int& same = traced("reference", [&]() -> int& { return x; });
  same = 7;
  EXPECT_EQ(x, 7);
  bool ran = false;
  traced("nothing", [&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST(TraceRange, AnExceptionPassesThroughNestedRanges) {
  const auto inner = [] { return traced("inner", []() -> int { throw std::runtime_error("x"); }); };
  EXPECT_THROW(traced("outer", inner), std::runtime_error);
  EXPECT_EQ(traced("after", [] { return 3; }), 3);  // and ranges go on working
}

}  // namespace
}  // namespace moe
