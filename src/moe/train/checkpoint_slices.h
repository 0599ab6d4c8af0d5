// The training checkpoint's tensors as slices of global tensors (train_checkpoint.h, layout
// "sharded"; docs/checkpoints.md): what each rank of a parallel run writes, and the reader a
// run of any mapping loads its own slices with, from a sharded checkpoint or from a one-rank
// one (whole tensors in model*.safetensors and optimizer.safetensors).
//
// Who writes what (each element exactly once, as checkpoint::write_index requires):
//   dense parameters and their AdamW state      the ranks with DP x CP rank 0 (one per TP block;
//                                               TP rank 0 for a tensor replicated over TP)
//   expert parameters and their AdamW state     the ranks with EDP rank 0 (one per EP x ETP box)
//   distributed optimizer state                 every rank, its own pieces (a flat range of the
//                                               parameter's box: NamedTensor::begin / end); of a
//                                               tensor replicated over TP, the TP rank 0 ones
//   buffers (expert biases, the same everywhere) world rank 0
// A tensor is named as in a one-rank checkpoint: the parameter's name, "<param>.exp_avg",
// "<param>.exp_avg_sq", "<param>.master".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "moe/checkpoint/sharded_checkpoint.h"
#include "moe/dist/parallel_state.h"
#include "moe/nn/gpt_model.h"
#include "moe/train/optimizer.h"

namespace moe::train {

// The slice of the global tensor a parameter's local value is (its layout, nn/parameter.h),
// optionally only the flat range [begin, end) of it.
checkpoint::TensorSlice slice_of(const nn::Parameter& p, int64_t begin = 0, int64_t end = -1);

// This rank's pieces of the model's parameters, buffers and the optimizer's state (see above).
std::vector<checkpoint::ShardPiece> owned_checkpoint_pieces(nn::GPTModel& model,
                                                            Optimizer& optimizer,
                                                            const dist::ParallelState& state);

// Reads slices of a checkpoint's tensors by name, from a sharded checkpoint (index.json) or from
// a one-rank checkpoint's safetensors files (a whole tensor is read once and cut).
class CheckpointSliceReader {
 public:
  explicit CheckpointSliceReader(const std::string& folder);
  ~CheckpointSliceReader();
  bool sharded() const;
  bool has(const std::string& name) const;
  // Fills `out` (the slice's numel, any dtype and device) with the slice of tensor `name`.
  void read(const std::string& name, const checkpoint::TensorSlice& slice, Tensor& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Whether an iteration folder holds a sharded checkpoint (index.json).
bool is_sharded_checkpoint(const std::string& folder);

// `text` of rank `root` on every rank of `group` (the temporary folder of a save), sent as
// tensors on `device` (the ranks' device: NCCL takes GPU memory only).
std::string broadcast_string(dist::ProcessGroup& group, const std::string& text, int root,
                             Device device);

}  // namespace moe::train
