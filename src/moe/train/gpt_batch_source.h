// The trainer's sample stream over Megatron's datasets (data::GPTDataset or
// data::BlendedDataset): micro-batches in Megatron's data-loader order, dataset[p], dataset[p+1],
// ... (MegatronPretrainingSampler with one data-parallel rank: the global batch of iteration k
// is dataset[k * global_batch_size .. (k + 1) * global_batch_size)).
//
// position() = samples read since the start (Megatron's consumed_samples), so a checkpoint that
// stores it resumes exactly. Reading past the end of the dataset wraps around to dataset[0]
// (the datasets are built with at least the samples the schedule asks for, so a run as planned
// never wraps; evaluation streams that outlast their dataset start over).
#pragma once

#include <cstdint>
#include <memory>

#include "moe/data/sample_dataset.h"
#include "moe/train/batch_source.h"

namespace moe::train {

class GPTBatchSource : public BatchSource {
 public:
  explicit GPTBatchSource(std::shared_ptr<const data::SampleDataset> dataset,
                          int64_t start_position = 0);

  int64_t sample_length() const override { return dataset_->sample_length(); }
  // [batch_size, seq_length + 1] i64 on the host: dataset[position() + b] for b < batch_size.
  Tensor next(int64_t batch_size) override;
  int64_t position() const override { return position_; }
  void set_position(int64_t position) override;

  const data::SampleDataset& dataset() const { return *dataset_; }

 private:
  std::shared_ptr<const data::SampleDataset> dataset_;
  int64_t position_ = 0;
};

}  // namespace moe::train
