// AdamW over a model's parameters, with fp32 master weights for 16-bit models (Megatron's
// --bf16 mixed precision: the model computes in bf16, the optimizer keeps fp32 masters and
// fp32 main gradients, and copies the updated masters back into the bf16 weights), optional
// bf16 moment states (--use-precision-aware-optimizer with --exp-avg-dtype /
// --exp-avg-sq-dtype bf16), global gradient-norm clipping (--clip-grad) and NaN/Inf detection.
//
// A step, given the gradients accumulated over the micro-batches of one global batch:
//   norm   = sqrt(sum over parameters of ||grad||^2)       (ops::squared_norm, fixed order)
//   non-finite norm -> the step is not taken (step() returns false; the caller decides:
//                      skip, or stop), nothing is changed
//   coeff  = min(1, clip_grad / (norm + 1e-6))             (clip_grad = 0: no clipping)
//   every parameter: ops::adamw_step with grad_scale = coeff, lr and weight decay from the
//   schedule; no weight decay on biases and on 1-D tensors (norm weights), as Megatron's
//   default param groups.
// state() names every tensor the optimizer owns for checkpoints: "<param>.exp_avg",
// "<param>.exp_avg_sq" and "<param>.master" (16-bit models only); the step count is separate.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/tensor.h"
#include "moe/dist/process_group.h"
#include "moe/nn/parameter.h"

namespace moe::train {

struct OptimizerConfig {
  double beta1 = 0.9;                   // --adam-beta1
  double beta2 = 0.999;                 // --adam-beta2
  double eps = 1e-8;                    // --adam-eps
  double clip_grad = 1.0;               // --clip-grad (0: off)
  DType exp_avg_dtype = DType::f32;     // --exp-avg-dtype fp32|bf16 (precision-aware)
  DType exp_avg_sq_dtype = DType::f32;  // --exp-avg-sq-dtype fp32|bf16
};

struct StepResult {
  bool taken = false;      // false: the gradient norm was NaN/Inf and nothing changed
  double grad_norm = 0.0;  // before clipping
};

// One optimizer state tensor: "<param>.exp_avg", "<param>.exp_avg_sq" or "<param>.master".
// It has the parameter's layout (nn::ParamLayout) and holds the elements [begin, end) of the
// parameter's local value, flattened: all of them, except under the distributed optimizer,
// which keeps only this rank's shard (then `value` is 1-D of end - begin elements).
struct NamedTensor {
  std::string name;
  Tensor* value = nullptr;
  const nn::Parameter* param = nullptr;
  int64_t begin = 0, end = 0;
};

// How this rank's squared gradient norms add up to the global norm (the norm of all gradients
// of the model, each element counted once). The dense part's sum is all-reduced over each group
// of `dense` in turn, the expert part's over each group of `expert`, and the two are added.
// Without data or expert parallelism both lists are empty and the norm is the one-rank sum.
//   AdamW under DP x EP:          dense {}            (reduced gradients are replicated)
//                                 expert {ETP x EP}   (each rank holds other experts)
//   the distributed optimizer:    dense {DP x CP}     (each rank holds a shard)
//                                 expert {EDP, ETP x EP}
// Tensor parallelism adds TP to the dense groups (each rank holds other blocks), and a
// parameter replicated over TP (ParamLayout::tp_replicated) is counted by TP rank 0 only
// (count_tp_replicated false elsewhere), as Megatron's param_is_not_tensor_parallel_duplicate.
struct GradNormGroups {
  std::vector<std::shared_ptr<dist::ProcessGroup>> dense, expert;
  bool count_tp_replicated = true;
  bool empty() const { return dense.empty() && expert.empty(); }
  // Whether this rank adds p's squares to its part of the norm (the last pipeline stage's copy
  // of the embedding never: the first stage's counts).
  bool counts(const nn::Parameter& p) const {
    return (count_tp_replicated || !p.layout.tp_replicated) && !p.layout.pp_copy;
  }
};

// What the trainer and the checkpoints see of an optimizer: AdamW (below) or the distributed
// optimizer (distributed_optimizer.h).
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One step at the given lr and weight decay over the gradients of one global batch (already
  // reduced over the data-parallel ranks). One host synchronisation (the norm).
  virtual StepResult step(double lr, double weight_decay) = 0;
  // The global gradient norm alone (also one synchronisation).
  virtual double grad_norm() = 0;
  // The tensors a checkpoint stores; see NamedTensor.
  virtual std::vector<NamedTensor> state() = 0;
  // After loading a model's weights into a 16-bit model: masters = the weights again.
  virtual void reload_masters_from_model() = 0;
  // Whether state() holds only this rank's shard of each tensor (the distributed optimizer), so
  // that every rank writes its own pieces into a checkpoint.
  virtual bool shards_state() const { return false; }
  // Waits until every parameter holds its updated value (the distributed optimizer's overlapped
  // all-gathers); nothing to wait for otherwise.
  virtual void wait_for_parameters() {}

  int64_t steps_taken() const { return steps_; }
  void set_steps_taken(int64_t steps) { steps_ = steps; }
  // Whether the parameter gets weight decay (not biases, not 1-D tensors such as norms).
  static bool decays(const nn::Parameter& p);

 protected:
  int64_t steps_ = 0;
};

// The global norm from this rank's dense and expert squared sums (GradNormGroups), reduced as
// f64 tensors on `device` (the model's: NCCL takes GPU memory only); one synchronisation per
// part. Non-finite parts stay non-finite on every rank.
double global_grad_norm(const Tensor& dense_sq, const Tensor& expert_sq,
                        const GradNormGroups& groups, Device device);

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<nn::Parameter*> params, const OptimizerConfig& config,
        GradNormGroups norm_groups = {});

  StepResult step(double lr, double weight_decay) override;
  double grad_norm() override;
  std::vector<NamedTensor> state() override;
  void reload_masters_from_model() override;

 private:
  struct Slot {
    nn::Parameter* param;
    Tensor master;  // f32 copy for 16-bit values; undefined when the value is the master
    Tensor exp_avg, exp_avg_sq;
    bool decay;
  };
  Tensor& master_of(Slot& s) { return s.master.defined() ? s.master : s.param->value; }

  std::vector<Slot> slots_;
  OptimizerConfig config_;
  GradNormGroups norm_groups_;
};

}  // namespace moe::train
