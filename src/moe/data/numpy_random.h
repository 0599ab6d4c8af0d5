// NumPy's legacy generator, numpy.random.RandomState, bit for bit: the generator Megatron-LM's
// GPTDataset shuffles its document and sample indices with (RandomState(--seed)), so that a
// --data-path / --split / --seed gives the training samples in the order Megatron gives them.
//
// The pieces, as numpy implements them (numpy/random/_mt19937.pyx, mtrand.pyx,
// src/mt19937/mt19937.c, src/distributions/distributions.c):
//   - MT19937 (Matsumoto & Nishimura 1998), 624 words of state, tempered 32-bit outputs;
//   - RandomState(int seed): init_genrand, key[0] = seed,
//       key[i] = 1812433253 * (key[i-1] ^ (key[i-1] >> 30)) + i   (mod 2^32);
//     RandomState(array of uint32): init_by_array (MT's reference seeding by a key array);
//   - next_uint64 = (next_uint32 << 32) | next_uint32 (two words, high first);
//   - random_interval(max): uniform in [0, max] by masked rejection: mask = the smallest
//     2^k - 1 >= max; draw (next_uint32 & mask) while it exceeds max (next_uint64 when
//     max > 2^32 - 1);
//   - shuffle(x): for i = n-1 down to 1, swap x[i] and x[random_interval(i)];
//   - permutation(n) = shuffle(arange(n));
//   - randint(low, high) (legacy, masked): off = low, rng = high - 1 - low; rng == 0 gives low
//     without a draw; rng == 2^32 - 1 gives low + next_uint32; rng < 2^32 - 1 draws
//     (next_uint32 & mask) until <= rng; larger ranges do the same with next_uint64.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace moe::data {

class NumpyRandomState {
 public:
  // RandomState(seed) for an integer seed; numpy accepts 0 .. 2^32 - 1 (an error otherwise).
  explicit NumpyRandomState(int64_t seed);
  // RandomState(np.array(key, dtype=uint32)): init_by_array. The key must not be empty.
  explicit NumpyRandomState(std::span<const uint32_t> key);

  uint32_t next_uint32();
  uint64_t next_uint64();

  // Uniform integer in [0, max] (numpy's random_interval; max = 0 draws nothing).
  uint64_t random_interval(uint64_t max);

  // RandomState.randint(low, high) with the default int64 dtype: uniform in [low, high).
  int64_t randint(int64_t low, int64_t high);
  std::vector<int64_t> randint(int64_t low, int64_t high, int64_t size);

  // RandomState.shuffle of a 1-D array, in place (any element type: only positions move).
  template <class T>
  void shuffle(std::span<T> values) {
    for (size_t i = values.size(); i-- > 1;)
      std::swap(values[i], values[static_cast<size_t>(random_interval(i))]);
  }

  // RandomState.permutation(n): 0 .. n-1 shuffled.
  std::vector<int64_t> permutation(int64_t n);

 private:
  void regenerate();  // the MT19937 twist of all 624 words

  static constexpr int kStateWords = 624;
  uint32_t key_[kStateWords];
  int position_ = kStateWords;
};

}  // namespace moe::data
