// A dataset of fixed-length token samples addressed by index: what Megatron's GPTDataset and
// BlendedDataset are to its data loader (dataset[i] for i = 0, 1, 2, ... in training order).
// GPTDataset (gpt_dataset.h) and BlendedDataset (blended_dataset.h) implement it;
// train::GPTBatchSource reads one as the trainer's sample stream.
#pragma once

#include <cstdint>
#include <string>

namespace moe::data {

class SampleDataset {
 public:
  virtual ~SampleDataset() = default;

  // Number of samples, dataset[0 .. size()).
  virtual int64_t size() const = 0;
  // Tokens per sample: seq_length + 1 (inputs = sample[:-1], labels = sample[1:]).
  virtual int64_t sample_length() const = 0;
  // Sample `index` (0 <= index < size()) into out[0 .. sample_length()). Safe from several
  // threads at once.
  virtual void read_sample(int64_t index, int64_t* out) const = 0;
  // Megatron's unique description (JSON text): what identifies the dataset and its cache.
  virtual const std::string& description() const = 0;
};

}  // namespace moe::data
