// Micro-batches from a Megatron GPT / blended dataset (gpt_batch_source.h).
#include "moe/train/gpt_batch_source.h"

#include <vector>

#include "moe/core/error.h"

namespace moe::train {

GPTBatchSource::GPTBatchSource(std::shared_ptr<const data::SampleDataset> dataset,
                               int64_t start_position)
    : dataset_(std::move(dataset)) {
  MOE_CHECK(dataset_ != nullptr, "GPTBatchSource: no dataset");
  MOE_CHECK(dataset_->size() >= 1, "GPTBatchSource: the dataset holds no samples (",
            dataset_->description(), ")");
  set_position(start_position);
}

void GPTBatchSource::set_position(int64_t position) {
  MOE_CHECK(position >= 0, "GPTBatchSource: position must be >= 0, got ", position);
  position_ = position;
}

Tensor GPTBatchSource::next(int64_t batch_size) {
  MOE_CHECK(batch_size >= 1, "GPTBatchSource: batch size must be positive, got ", batch_size);
  const int64_t length = dataset_->sample_length();
  std::vector<int64_t> ids(static_cast<size_t>(batch_size * length));
  for (int64_t b = 0; b < batch_size; ++b)
    dataset_->read_sample((position_ + b) % dataset_->size(),
                          ids.data() + static_cast<size_t>(b * length));
  position_ += batch_size;
  return Tensor::from_vector(ids, {batch_size, length});
}

}  // namespace moe::train
