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
#include <string>
#include <vector>

#include "moe/core/tensor.h"
#include "moe/nn/parameter.h"

namespace moe::train {

struct OptimizerConfig {
  double beta1 = 0.9;       // --adam-beta1
  double beta2 = 0.999;     // --adam-beta2
  double eps = 1e-8;        // --adam-eps
  double clip_grad = 1.0;   // --clip-grad (0: off)
  DType exp_avg_dtype = DType::f32;     // --exp-avg-dtype fp32|bf16 (precision-aware)
  DType exp_avg_sq_dtype = DType::f32;  // --exp-avg-sq-dtype fp32|bf16
};

struct StepResult {
  bool taken = false;      // false: the gradient norm was NaN/Inf and nothing changed
  double grad_norm = 0.0;  // before clipping
};

struct NamedTensor {
  std::string name;
  Tensor* value = nullptr;
};

class AdamW {
 public:
  AdamW(std::vector<nn::Parameter*> params, const OptimizerConfig& config);

  // One optimizer step at the given lr and weight decay. One host synchronisation (the norm).
  StepResult step(double lr, double weight_decay);
  // The gradient norm alone (also one synchronisation).
  double grad_norm();

  int64_t steps_taken() const { return steps_; }
  void set_steps_taken(int64_t steps) { steps_ = steps; }
  std::vector<NamedTensor> state();
  // After loading a model's weights into a 16-bit model: masters = the weights again.
  void reload_masters_from_model();
  // Whether the parameter gets weight decay (not biases, not 1-D tensors such as norms).
  static bool decays(const nn::Parameter& p);

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
  int64_t steps_ = 0;
};

}  // namespace moe::train
