// The model tensors of a sharded checkpoint (sharded_checkpoint.h: an iteration folder of a
// parallel training run, index.json + shard_<r>_of_<w>.safetensors) as a TensorSource, so that
// what reads model folders (the streamed converter `moe convert --from moecore`, load_weights)
// reads it too. Each tensor is assembled whole from the slices every rank wrote, one tensor at a
// time (ShardedCheckpointReader::read_full): memory stays one tensor. load_rows reads only the
// stored boxes that hold those rows.
//
// The optimizer state a training checkpoint keeps next to the weights ("<param>.exp_avg",
// "<param>.exp_avg_sq", "<param>.master" of a stored tensor "<param>") is left out: the source
// holds the model's parameters and buffers, as a model folder does.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "moe/checkpoint/model_io.h"
#include "moe/checkpoint/sharded_checkpoint.h"
#include "moe/checkpoint/tensor_source.h"

namespace moe::checkpoint {

class ShardedTensorSource final : public TensorSource {
 public:
  explicit ShardedTensorSource(const std::string& folder);
  const std::vector<std::string>& names() const override { return names_; }
  bool contains(const std::string& name) const override;
  SourceTensorInfo info(const std::string& name) const override;
  Tensor load(const std::string& name) const override;
  Tensor load_rows(const std::string& name, int64_t begin, int64_t end) const override;
  std::string where(const std::string& name) const override { return description(); }
  std::string description() const override { return "sharded checkpoint " + folder_; }

 private:
  std::string folder_;
  ShardedCheckpointReader reader_;
  std::vector<std::string> names_;
};

// Whether `dir` holds a sharded checkpoint (its index.json).
bool is_sharded_folder(const std::string& dir);

// The tensors of a model folder of `format`: a ShardedTensorSource for a moecore folder that is
// a sharded checkpoint, else a CheckpointTensorSource over its safetensors (model.safetensors or
// its index).
std::unique_ptr<TensorSource> open_model_tensors(const std::string& dir, CheckpointFormat format);

}  // namespace moe::checkpoint
