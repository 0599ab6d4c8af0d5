// Where the trainer's micro-batches come from: samples of seq_length + 1 tokens, as Megatron's
// GPTDataset yields them (the trainer cuts inputs = sample[:-1], labels = sample[1:]).
//
// A source is a deterministic stream of samples. position() is how far the stream has been
// read; set_position(p) puts it back at p, so a checkpoint that stores position() resumes the
// data exactly (the next micro-batch after set_position(p) is the one that came after p).
#pragma once

#include <cstdint>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::train {

class BatchSource {
 public:
  virtual ~BatchSource() = default;

  // Tokens per sample: seq_length + 1.
  virtual int64_t sample_length() const = 0;
  // The next `batch_size` samples in data-loader order: ids [batch_size, seq_length + 1] i64 on
  // the host. Advances position().
  virtual Tensor next(int64_t batch_size) = 0;
  // An opaque count the source defines (for TokenArraySource: samples read since the start).
  virtual int64_t position() const = 0;
  virtual void set_position(int64_t position) = 0;
};

// An in-memory token array cut into samples as Megatron's GPTDataset cuts documents:
//   sample i = tokens[i * S, i * S + S + 1)   (S = seq_length; consecutive samples share one
//                                             token, so every token but the first is a label once)
//   num_samples = (tokens.size() - 1) / S     (the tail that does not fill a sample is unused)
// Epochs repeat forever. With `shuffle`, epoch e reads the samples in the order of a
// Fisher-Yates permutation drawn from Philox(seed, e): the same on every machine, and a
// function of (seed, position) alone, which is what makes set_position exact.
// position() = samples read since the start (epoch = position / num_samples).
class TokenArraySource : public BatchSource {
 public:
  TokenArraySource(std::vector<int32_t> tokens, int64_t seq_length, uint64_t seed,
                   bool shuffle = true);

  int64_t sample_length() const override { return seq_length_ + 1; }
  Tensor next(int64_t batch_size) override;
  int64_t position() const override { return position_; }
  void set_position(int64_t position) override;

  int64_t num_samples() const { return num_samples_; }
  // The sample index (0 .. num_samples - 1) read at stream position p.
  int64_t sample_at(int64_t p);

 private:
  const std::vector<int64_t>& order_of_epoch(int64_t epoch);

  std::vector<int32_t> tokens_;
  int64_t seq_length_;
  uint64_t seed_;
  bool shuffle_;
  int64_t num_samples_;
  int64_t position_ = 0;
  int64_t cached_epoch_ = -1;  // the epoch whose permutation order_ holds
  std::vector<int64_t> order_;
};

}  // namespace moe::train
