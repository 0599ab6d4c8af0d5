#include "moe/train/mock_batch_source.h"

#include <cstdint>
#include <vector>

#include "moe/core/error.h"
#include "moe/core/rng.h"

namespace moe::train {

MockTokenSource::MockTokenSource(int64_t vocab_size, int64_t seq_length, uint64_t seed)
    : vocab_size_(vocab_size), seq_length_(seq_length), seed_(seed) {
  MOE_CHECK(vocab_size > 0 && vocab_size <= int64_t{UINT32_MAX},
            "--mock-data needs a --vocab-size in [1, 2^32), got ", vocab_size);
  MOE_CHECK(seq_length > 0, "--mock-data needs a positive --seq-length, got ", seq_length);
}

int64_t MockTokenSource::token(int64_t p, int64_t j) const {
  const uint64_t index =
      static_cast<uint64_t>(p) * static_cast<uint64_t>(seq_length_ + 1) + static_cast<uint64_t>(j);
  const Philox4 r = philox4x32_10(seed_, index >> 2);
  return static_cast<int64_t>(r.v[index & 3] % static_cast<uint32_t>(vocab_size_));
}

Tensor MockTokenSource::next(int64_t batch_size) {
  MOE_CHECK(batch_size > 0, "MockTokenSource::next: batch size must be positive, got ", batch_size);
  const int64_t L = seq_length_ + 1;
  std::vector<int64_t> ids(static_cast<size_t>(batch_size * L));
  for (int64_t b = 0; b < batch_size; ++b)
    for (int64_t j = 0; j < L; ++j) ids[static_cast<size_t>(b * L + j)] = token(position_ + b, j);
  position_ += batch_size;
  return Tensor::from_vector(ids, {batch_size, L});
}

void MockTokenSource::set_position(int64_t position) {
  MOE_CHECK(position >= 0, "MockTokenSource: negative position ", position);
  position_ = position;
}

}  // namespace moe::train
