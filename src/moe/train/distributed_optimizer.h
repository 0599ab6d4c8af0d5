// The distributed optimizer (Megatron's --use-distributed-optimizer, ZeRO-1;
// docs/distributed-training.md): AdamW whose fp32 master weights and moments are sharded over
// the data-parallel ranks, each rank keeping those of its owned chunk of every bucket of the
// parameter buffers (ParamAndGradBuffer::owned_range / shards()): the dense buffer's over DP x
// CP, the expert buffer's over EDP. Optimizer memory per rank falls as 1 / (group size).
//
// A step, after DataParallel::finish_grad_sync() reduce-scattered the gradients (each rank's
// owned chunk holds the summed gradient of the global batch):
//   norm^2 = the owned chunks' squared gradients, summed over the groups (GradNormGroups:
//            dense over DP x CP, expert over EDP then ETP x EP); non-finite: no step
//   coeff  = min(1, clip_grad / (norm + 1e-6))
//   every owned parameter piece: ops::adamw_step on its master / moment shards with the
//            parameter's weight decay rule (Optimizer::decays), the updated master rounded into
//            the piece's place in the parameter buffer
//   all-gather each bucket's parameters over its group, so every rank holds the whole model
//            again; with --overlap-param-gather the gathers run asynchronously and
//            wait_for_params() (the model's on_params_needed hook) waits for the buckets a
//            layer reads, in the next forward
// The result equals AdamW's on the whole model (the same elementwise update on every element).
//
// state() names the shards as AdamW names whole tensors ("<param>.exp_avg", ".exp_avg_sq",
// ".master" for 16-bit models) with NamedTensor::begin / end giving the piece of the parameter.
#pragma once

#include <memory>
#include <vector>

#include "moe/train/optimizer.h"
#include "moe/train/param_buffer.h"

namespace moe::train {

class DistributedOptimizer : public Optimizer {
 public:
  // The buffers must have been built with the group size as the pad multiple. They (and their
  // parameters) must outlive the optimizer.
  DistributedOptimizer(std::vector<ParamAndGradBuffer*> buffers, const OptimizerConfig& config,
                       GradNormGroups norm_groups, bool overlap_param_gather);
  ~DistributedOptimizer() override;

  StepResult step(double lr, double weight_decay) override;
  double grad_norm() override;
  std::vector<NamedTensor> state() override;
  void reload_masters_from_model() override;
  bool shards_state() const override { return true; }
  void wait_for_parameters() override { finish_param_gather(); }

  // --overlap-param-gather: waits for the all-gathers of the buckets that hold these
  // parameters (no-op when they are complete or nothing is in flight).
  void wait_for_params(const std::vector<nn::Parameter*>& params);
  // Waits for every all-gather in flight.
  void finish_param_gather();
  // Bytes of optimizer state this rank holds (masters and moments).
  int64_t state_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::train
