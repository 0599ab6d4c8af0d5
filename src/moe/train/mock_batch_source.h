// Megatron's --mock-data: synthetic samples, no corpus. Token j of sample p is drawn from the
// vocabulary by counter-based random numbers (core/rng.h's Philox):
//   token(p, j) = philox(seed, p * L + j) mod vocab_size     (L = seq_length + 1)
// so a sample is a function of (seed, p) alone: every machine draws the same stream, and
// set_position(p) resumes it exactly (a checkpoint stores position() = samples read).
// Megatron's MockGPTDataset yields fixed arange-like samples; random tokens give a loss that
// stays near log(vocab), a check of the throughput and of the plumbing, not of learning.
#pragma once

#include <cstdint>

#include "moe/train/batch_source.h"

namespace moe::train {

class MockTokenSource : public BatchSource {
 public:
  MockTokenSource(int64_t vocab_size, int64_t seq_length, uint64_t seed);

  int64_t sample_length() const override { return seq_length_ + 1; }
  Tensor next(int64_t batch_size) override;
  int64_t position() const override { return position_; }
  void set_position(int64_t position) override;

  // Token j of the sample at stream position p.
  int64_t token(int64_t p, int64_t j) const;

 private:
  int64_t vocab_size_, seq_length_;
  uint64_t seed_;
  int64_t position_ = 0;
};

}  // namespace moe::train
