// --split as Megatron parses it: normalised weights, bookends, document ranges with Python's
// round-half-to-even; numpy's pairwise sum; errors for strings that are not a split.
#include "moe/data/dataset_split.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "moe/core/error.h"

namespace moe::data {
namespace {

using Range = std::pair<int64_t, int64_t>;

std::vector<Range> ranges(const std::string& split, int64_t documents) {
  std::vector<Range> out;
  for (const auto& bookends : split_matrix(parse_split(split)))
    out.push_back(bookends ? split_document_range(*bookends, documents) : Range{-1, -1});
  return out;
}

TEST(DatasetSplit, NormalisesTheWeights) {
  const auto w = parse_split("969,30,1");
  EXPECT_EQ(w[0], 969.0 / 1000.0);
  EXPECT_EQ(w[1], 30.0 / 1000.0);
  EXPECT_EQ(w[2], 1.0 / 1000.0);
  EXPECT_EQ(parse_split("1"), (std::array<double, 3>{1.0, 0.0, 0.0}));
  EXPECT_EQ(parse_split(" 969, 30, 1 "), parse_split("969,30,1"));
  EXPECT_EQ(parse_split("90/5/5"), parse_split("90,5,5"));
  EXPECT_EQ(parse_split("0.5,0.25,0.25"), (std::array<double, 3>{0.5, 0.25, 0.25}));
}

TEST(DatasetSplit, DocumentRangesAsMegatron) {
  // Values from Megatron's formulas evaluated in Python.
  EXPECT_EQ(ranges("969,30,1", 1000), (std::vector<Range>{{0, 969}, {969, 999}, {999, 1000}}));
  EXPECT_EQ(ranges("969,30,1", 333), (std::vector<Range>{{0, 323}, {323, 333}, {333, 333}}));
  EXPECT_EQ(ranges("969,30,1", 7), (std::vector<Range>{{0, 7}, {7, 7}, {7, 7}}));
  // 0.5 * 5 = 2.5 rounds to 2 (half to even), not 3.
  EXPECT_EQ(ranges("1,1", 5), (std::vector<Range>{{0, 2}, {2, 5}, {-1, -1}}));
  // A zero weight is no split at all; the ranges always tile [0, N).
  EXPECT_EQ(ranges("1", 10), (std::vector<Range>{{0, 10}, {-1, -1}, {-1, -1}}));
  EXPECT_EQ(ranges("99990,8,2", 100000),
            (std::vector<Range>{{0, 99990}, {99990, 99998}, {99998, 100000}}));
  EXPECT_EQ(ranges("0,1,0", 4), (std::vector<Range>{{-1, -1}, {0, 4}, {-1, -1}}));
}

TEST(DatasetSplit, NumpySumIsPairwise) {
  // numpy.sum([0.1] * 10) == 1.0, while adding left to right gives 0.9999999999999999.
  const std::vector<double> tenths(10, 0.1);
  EXPECT_EQ(numpy_sum(tenths), 1.0);
  double sequential = 0.0;
  for (double v : tenths) sequential += v;
  EXPECT_NE(sequential, 1.0);
  EXPECT_EQ(numpy_sum(std::vector<double>{}), 0.0);
  const auto w = normalize_weights(std::vector<double>{30.0, 70.0});
  EXPECT_EQ(w, (std::vector<double>{0.3, 0.7}));
}

TEST(DatasetSplit, RejectsBadStrings) {
  for (const char* bad :
       {"", ",", "a,b", "1,2,3,4", "-1,2", "0,0,0", "1..2,1", "1,,2", "1e3", "969 30 1"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(parse_split(bad), moe::Error);
  }
  try {
    parse_split("1,x");
    FAIL();
  } catch (const moe::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--split \"1,x\""), std::string::npos) << e.what();
  }
  EXPECT_EQ(split_name(Split::valid), std::string("valid"));
}

}  // namespace
}  // namespace moe::data
