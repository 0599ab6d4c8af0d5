// numpy.random.RandomState's MT19937 and legacy bounded integers (numpy_random.h).
#include "moe/data/numpy_random.h"

#include <algorithm>
#include <numeric>

#include "moe/core/error.h"

namespace moe::data {

namespace {

constexpr int kN = 624;
constexpr int kM = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfu;
constexpr uint32_t kUpperMask = 0x80000000u;
constexpr uint32_t kLowerMask = 0x7fffffffu;

// init_genrand: the linear recurrence that fills the state from one 32-bit word.
void init_genrand(uint32_t* key, uint32_t seed) {
  key[0] = seed;
  for (int i = 1; i < kN; ++i)
    key[i] = 1812433253u * (key[i - 1] ^ (key[i - 1] >> 30)) + static_cast<uint32_t>(i);
}

// The smallest all-ones mask covering `max` (numpy's gen_mask).
uint64_t covering_mask(uint64_t max) {
  uint64_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  mask |= mask >> 32;
  return mask;
}

}  // namespace

NumpyRandomState::NumpyRandomState(int64_t seed) {
  MOE_CHECK(seed >= 0 && seed <= int64_t{0xffffffff},
            "numpy RandomState: seed must be between 0 and 2**32 - 1, got ", seed);
  init_genrand(key_, static_cast<uint32_t>(seed));
  position_ = kN;
}

NumpyRandomState::NumpyRandomState(std::span<const uint32_t> key) {
  MOE_CHECK(!key.empty(), "numpy RandomState: seed array must be non-empty");
  // init_by_array (MT19937 reference, 2002/1/26), which numpy's mt19937_init_by_array follows.
  init_genrand(key_, 19650218u);
  const int length = static_cast<int>(key.size());
  int i = 1, j = 0;
  for (int k = std::max(kN, length); k > 0; --k) {
    key_[i] = (key_[i] ^ ((key_[i - 1] ^ (key_[i - 1] >> 30)) * 1664525u)) + key[size_t(j)] +
              static_cast<uint32_t>(j);
    ++i;
    ++j;
    if (i >= kN) {
      key_[0] = key_[kN - 1];
      i = 1;
    }
    if (j >= length) j = 0;
  }
  for (int k = kN - 1; k > 0; --k) {
    key_[i] =
        (key_[i] ^ ((key_[i - 1] ^ (key_[i - 1] >> 30)) * 1566083941u)) - static_cast<uint32_t>(i);
    ++i;
    if (i >= kN) {
      key_[0] = key_[kN - 1];
      i = 1;
    }
  }
  key_[0] = 0x80000000u;  // a non-zero initial state is assured
  position_ = kN;
}

void NumpyRandomState::regenerate() {
  for (int i = 0; i < kN; ++i) {
    const uint32_t y = (key_[i] & kUpperMask) | (key_[(i + 1) % kN] & kLowerMask);
    key_[i] = key_[(i + kM) % kN] ^ (y >> 1) ^ ((y & 1u) ? kMatrixA : 0u);
  }
  position_ = 0;
}

uint32_t NumpyRandomState::next_uint32() {
  if (position_ == kN) regenerate();
  uint32_t y = key_[position_++];
  // Tempering.
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

uint64_t NumpyRandomState::next_uint64() {
  const uint64_t high = next_uint32();
  return (high << 32) | next_uint32();
}

uint64_t NumpyRandomState::random_interval(uint64_t max) {
  if (max == 0) return 0;
  const uint64_t mask = covering_mask(max);
  uint64_t value;
  if (max <= 0xffffffffu) {
    while ((value = (next_uint32() & mask)) > max) {
    }
  } else {
    while ((value = (next_uint64() & mask)) > max) {
    }
  }
  return value;
}

int64_t NumpyRandomState::randint(int64_t low, int64_t high) {
  MOE_CHECK(low < high, "numpy RandomState.randint: low >= high (", low, " >= ", high, ")");
  const uint64_t rng = static_cast<uint64_t>(high) - static_cast<uint64_t>(low) - 1;
  uint64_t value;
  if (rng == 0) {
    value = 0;
  } else if (rng == 0xffffffffu) {
    value = next_uint32();
  } else if (rng < 0xffffffffu) {
    const uint64_t mask = covering_mask(rng);
    while ((value = (next_uint32() & mask)) > rng) {
    }
  } else if (rng == ~uint64_t{0}) {
    value = next_uint64();
  } else {
    const uint64_t mask = covering_mask(rng);
    while ((value = (next_uint64() & mask)) > rng) {
    }
  }
  return static_cast<int64_t>(static_cast<uint64_t>(low) + value);
}

std::vector<int64_t> NumpyRandomState::randint(int64_t low, int64_t high, int64_t size) {
  MOE_CHECK(size >= 0, "numpy RandomState.randint: negative size ", size);
  MOE_CHECK(low < high, "numpy RandomState.randint: low >= high (", low, " >= ", high, ")");
  std::vector<int64_t> out(static_cast<size_t>(size));
  for (int64_t& v : out) v = randint(low, high);
  return out;
}

std::vector<int64_t> NumpyRandomState::permutation(int64_t n) {
  MOE_CHECK(n >= 0, "numpy RandomState.permutation: negative size ", n);
  std::vector<int64_t> out(static_cast<size_t>(n));
  std::iota(out.begin(), out.end(), int64_t{0});
  shuffle(std::span<int64_t>(out));
  return out;
}

}  // namespace moe::data
