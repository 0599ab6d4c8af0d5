// numpy.random.RandomState bit for bit: known answers recorded once from numpy 2.4
// (python -c "import numpy as np; r = np.random.RandomState(1234); print(r.randint(0, 10, 8))"
// and the like). tests/data/check_gpt_dataset_with_python.py compares many more draws with the
// numpy that CI installs.
#include "moe/data/numpy_random.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "moe/core/error.h"

namespace moe::data {
namespace {

using I64 = std::vector<int64_t>;

std::vector<uint32_t> raw(NumpyRandomState& r, int n) {
  std::vector<uint32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(r.next_uint32());
  return out;
}

TEST(NumpyRandom, RawWordsOfIntegerSeeds) {
  // randint(0, 2**32, dtype=uint64) returns the raw 32-bit words (init_genrand seeding).
  NumpyRandomState zero(0);
  EXPECT_EQ(raw(zero, 3), (std::vector<uint32_t>{2357136044u, 2546248239u, 3071714933u}));
  NumpyRandomState s1234(1234);
  EXPECT_EQ(raw(s1234, 4),
            (std::vector<uint32_t>{822569775u, 2137449171u, 2671936806u, 3512589365u}));
  NumpyRandomState largest(4294967295);
  EXPECT_EQ(raw(largest, 3), (std::vector<uint32_t>{419326371u, 479346978u, 3918654476u}));
}

TEST(NumpyRandom, ArraySeedsUseInitByArray) {
  // RandomState([1, 2, 3]) and MT19937's reference key {0x123, 0x234, 0x345, 0x456}.
  const uint32_t small[] = {1, 2, 3};
  NumpyRandomState a(small);
  EXPECT_EQ(raw(a, 3), (std::vector<uint32_t>{2619334238u, 1552691353u, 3808334787u}));
  const uint32_t reference[] = {0x123, 0x234, 0x345, 0x456};
  NumpyRandomState b(reference);
  EXPECT_EQ(raw(b, 3), (std::vector<uint32_t>{1067595299u, 955945823u, 477289528u}));
}

TEST(NumpyRandom, RandintIsMaskedRejection) {
  NumpyRandomState r(1234);
  EXPECT_EQ(r.randint(0, 10, 8), (I64{3, 6, 5, 4, 8, 9, 1, 7}));
  NumpyRandomState wide(1234);  // a range above 2^32 draws 64-bit words
  EXPECT_EQ(wide.randint(0, int64_t{1} << 40, 4),
            (I64{204000912083, 166721346613, 878802328948, 656147994617}));
  NumpyRandomState mixed(7);  // negative low; a one-value range draws nothing; near 2^63
  EXPECT_EQ(mixed.randint(-5, 5, 6), (I64{-1, 4, 1, -2, -2, 2}));
  EXPECT_EQ(mixed.randint(0, 1, 2), (I64{0, 0}));
  EXPECT_EQ(mixed.randint(0, INT64_MAX, 2), (I64{8404058199860020572, 5681832686530518414}));
}

TEST(NumpyRandom, PermutationAndShuffle) {
  NumpyRandomState r(1234);
  EXPECT_EQ(r.permutation(10), (I64{7, 2, 9, 1, 0, 8, 4, 5, 6, 3}));
  NumpyRandomState s(1234);  // shuffle only moves elements: an int32 array gives the same order
  std::vector<int32_t> values = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  s.shuffle(std::span<int32_t>(values));
  EXPECT_EQ(values, (std::vector<int32_t>{7, 8, 11, 2, 9, 10, 1, 0, 4, 5, 6, 3}));
  // Past the first 624 words (the state is regenerated).
  NumpyRandomState big(1234);
  const I64 p = big.permutation(1000);
  EXPECT_EQ(I64(p.begin(), p.begin() + 5), (I64{681, 990, 155, 768, 438}));
  EXPECT_EQ(I64(p.end() - 5, p.end()), (I64{204, 53, 294, 723, 815}));
  // One state drawn by several calls in sequence, as Megatron draws document then sample order.
  NumpyRandomState seq(1234);
  EXPECT_EQ(seq.permutation(5), (I64{4, 0, 1, 2, 3}));
  EXPECT_EQ(seq.randint(3, 17, 3), (I64{7, 11, 12}));
}

TEST(NumpyRandom, RejectsWhatNumpyRejects) {
  EXPECT_THROW(NumpyRandomState(-1), moe::Error);
  EXPECT_THROW(NumpyRandomState(int64_t{1} << 32), moe::Error);
  EXPECT_THROW(NumpyRandomState(std::span<const uint32_t>()), moe::Error);
  NumpyRandomState r(1);
  EXPECT_THROW(r.randint(5, 5), moe::Error);
  EXPECT_THROW(r.permutation(-1), moe::Error);
  EXPECT_TRUE(r.permutation(0).empty());
  EXPECT_EQ(r.permutation(1), I64{0});
}

}  // namespace
}  // namespace moe::data
