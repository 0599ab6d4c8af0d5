// Data parallelism as Megatron-Core's DistributedDataParallel (docs/distributed-training.md):
// the model's parameters in contiguous buffers per gradient group (param_buffer.h), the
// gradients of each bucket summed over the group that holds copies of them, optionally while
// the backward still runs.
//
//   dense parameters    buffers over DP x CP   (attention, dense MLPs, norms, router, shared
//   expert) expert parameters   buffers over EDP       (the routed experts of this EP x ETP rank)
// one buffer per value dtype within each (a bf16 model keeps its routers' weights in fp32), as
// Megatron-Core keeps one buffer per parameter / gradient dtype.
//
// Gradient scaling: the trainer scales every micro-batch's loss by 1 / (M x DP) (M: this rank's
// micro-batches per step); under context parallelism each CP rank's gradient is its tokens'
// share of its micro-batch's (the model's loss is the whole micro-batch's), so the sum over the
// DP x CP group is the mean over the global batch: the gradient one rank computes on all M x DP
// micro-batches (Megatron scales by 1 / (DP x CP) and multiplies the loss by CP: the same). An
// expert's gradient sums the tokens that every rank of its EP group sent it, so its sum over EDP
// covers all of them as well.
//
// Reduction (--use-distributed-optimizer off): all-reduce of each bucket; on: reduce-scatter,
// so rank r of the group ends with the summed gradients of its owned chunk only
// (ParamAndGradBuffer::owned_range) and the distributed optimizer updates that chunk.
// --grad-reduce-in-bf16 communicates a bf16 copy of each bucket (the sum is rounded to bf16
// once; the local accumulation stays fp32, --accumulate-allreduce-grads-in-fp32).
//
// Tensor parallelism: a parameter replicated over TP whose gradient is a partial sum on each TP
// rank (ParamLayout::tp_partial_grad: norms under sequence parallelism, routers, QK-norm) is
// summed over TP first, in one all-reduce per call (Megatron's _allreduce_layernorm_grads), then
// reduced over DP x CP like the others; TP blocks need nothing more.
//
// Pipeline parallelism: the embedding held by the first stage and by the loss's or MTP's stage
// (ParamLayout::pp_shared: a tied output layer, MTP) has its copies' gradients summed by an
// exchange between those stages in finish_grad_sync, before its bucket's reduction (Megatron's
// embedding group), so every copy takes the same update. The gradient norm adds the
// stages' parts over PP.
//
// --overlap-grad-reduce: GPTModel::on_grads_ready reports each group of parameters whose
// gradients are complete; in the last micro-batch of a step a bucket whose parameters are all
// complete starts its collective at once (asynchronously; on the GPU on the backend's
// communication stream, ordered after the compute stream by an event). finish_grad_sync()
// starts what is left and waits for everything. Without overlap every bucket starts there.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "moe/dist/parallel_state.h"
#include "moe/nn/gpt_model.h"
#include "moe/train/optimizer.h"
#include "moe/train/param_buffer.h"

namespace moe::train {

struct DdpConfig {
  // --ddp-bucket-size: elements per bucket; 0: Megatron's default max(40M, 1M x DP x CP).
  int64_t bucket_size = 0;
  bool overlap_grad_reduce = false;        // --overlap-grad-reduce
  bool use_distributed_optimizer = false;  // --use-distributed-optimizer
  bool overlap_param_gather = false;       // --overlap-param-gather (distributed optimizer)
  bool grad_reduce_in_bf16 = false;        // --grad-reduce-in-bf16
};

class DataParallel {
 public:
  // Moves the model's parameters into buffers (dense over state.dp_cp(), expert over
  // state.edp()) and installs the model's on_grads_ready hook. The model must outlive this.
  DataParallel(nn::GPTModel& model, const dist::ParallelState& state, const DdpConfig& config);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Before each micro-batch's forward: whether its backward is the step's last (only that one
  // starts reductions; earlier ones only accumulate).
  void start_micro_batch(bool last_of_step);
  // After the last backward: starts every bucket not yet started and waits for all of them.
  void finish_grad_sync();

  // The buffers: dense ones first (by value dtype, in order of first appearance), then expert
  // ones (any may be absent when the model has no such parameters).
  std::vector<ParamAndGradBuffer*> buffers();
  // The norm groups of this mapping for the optimizer (optimizer.h GradNormGroups).
  GradNormGroups norm_groups() const;
  const DdpConfig& config() const { return config_; }
  // Elements per bucket after the default is applied.
  int64_t bucket_size() const { return bucket_size_; }

 private:
  struct BufferState;
  void grads_ready(const std::vector<nn::Parameter*>& params);
  void start_bucket(BufferState& b, int bucket);
  // Sums over TP the gradients of those of `params` with partial TP gradients that this step has
  // not summed yet.
  void sum_partial_grads_over_tp(const std::vector<nn::Parameter*>& params);
  // Sums the gradients of the parameters the first and last pipeline stages both hold
  // (ParamLayout::pp_shared) over the two.
  void sum_pipeline_shared_grads();

  nn::GPTModel& model_;
  const dist::ParallelState& state_;
  DdpConfig config_;
  int64_t bucket_size_ = 0;
  bool last_micro_batch_ = true;
  std::vector<std::unique_ptr<BufferState>> states_;
  std::unordered_map<const nn::Parameter*, std::pair<int, int>> where_;  // buffer, entry
  std::unordered_map<const nn::Parameter*, bool> tp_summed_;  // partial TP grads: summed yet
  std::vector<int> pp_shared_holders_;  // pipeline ranks holding a pp_shared copy, in order
};

}  // namespace moe::train
