#include "moe/train/batch_source.h"

#include <numeric>

#include "moe/core/error.h"
#include "moe/core/rng.h"

namespace moe::train {

TokenArraySource::TokenArraySource(std::vector<int32_t> tokens, int64_t seq_length, uint64_t seed,
                                   bool shuffle)
    : tokens_(std::move(tokens)), seq_length_(seq_length), seed_(seed), shuffle_(shuffle) {
  MOE_CHECK(seq_length >= 1, "--seq-length must be positive, got ", seq_length);
  const int64_t n = static_cast<int64_t>(tokens_.size());
  num_samples_ = n > 0 ? (n - 1) / seq_length : 0;
  MOE_CHECK(num_samples_ >= 1, "TokenArraySource: ", n, " tokens do not make one sample of ",
            "--seq-length ", seq_length, " + 1 tokens");
}

void TokenArraySource::set_position(int64_t position) {
  MOE_CHECK(position >= 0, "TokenArraySource: position must be >= 0, got ", position);
  position_ = position;
}

const std::vector<int64_t>& TokenArraySource::order_of_epoch(int64_t epoch) {
  if (epoch == cached_epoch_) return order_;
  order_.resize(static_cast<size_t>(num_samples_));
  std::iota(order_.begin(), order_.end(), int64_t{0});
  if (shuffle_) {
    // Fisher-Yates from the last slot down; slot i swaps with j uniform in [0, i] (64 random
    // bits reduced by a 128-bit multiply: no modulo bias worth the name, same on every host).
    for (int64_t i = num_samples_ - 1; i > 0; --i) {
      const Philox4 r = philox4x32_10(seed_ ^ (0x9E3779B97F4A7C15ull * uint64_t(epoch + 1)),
                                      static_cast<uint64_t>(i));
      const uint64_t bits = (uint64_t(r.v[0]) << 32) | r.v[1];
      const auto j = static_cast<int64_t>(
          (static_cast<unsigned __int128>(bits) * static_cast<uint64_t>(i + 1)) >> 64);
      std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(j)]);
    }
  }
  cached_epoch_ = epoch;
  return order_;
}

int64_t TokenArraySource::sample_at(int64_t p) {
  MOE_CHECK(p >= 0, "TokenArraySource: position must be >= 0, got ", p);
  return order_of_epoch(p / num_samples_)[static_cast<size_t>(p % num_samples_)];
}

Tensor TokenArraySource::next(int64_t batch_size) {
  MOE_CHECK(batch_size >= 1, "TokenArraySource: batch size must be positive, got ", batch_size);
  const int64_t L = seq_length_ + 1;
  std::vector<int64_t> ids(static_cast<size_t>(batch_size * L));
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t start = sample_at(position_ + b) * seq_length_;
    for (int64_t t = 0; t < L; ++t)
      ids[static_cast<size_t>(b * L + t)] = tokens_[static_cast<size_t>(start + t)];
  }
  position_ += batch_size;
  return Tensor::from_vector(ids, {batch_size, L});
}

}  // namespace moe::train
