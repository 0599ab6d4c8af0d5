// The dense SwiGLU MLP of a non-MoE layer (Mixtral-style models' leading dense layers in
// DeepSeek, every layer of a dense model):
//   h1 = x fc1^T [T, 2F],  fc1 [2F, H] = [gate; up]   (Megatron's linear_fc1 layout; HF keeps
//                                                      gate_proj and up_proj apart: fc1 is
//                                                      their row concatenation)
//   a  = silu(gate) * up [T, F]                        (ops::swiglu_forward, no probs)
//   y  = a fc2^T [T, H],   fc2 [H, F]                  (HF down_proj, Megatron linear_fc2)
// Initialisation (param_init.h): fc1 ~ normal(0, std), fc2 ~ normal(0, std / sqrt(2 L)).
// Tensor parallelism (tensor_parallel.h): rank r holds F/P of the width, [r F/P, (r + 1) F/P):
// fc1's gate and up rows of it (fc1 viewed as [2, F, H]) and fc2's columns; the input enters the
// TP region before fc1, the output leaves it after fc2.
// Gradient rule: backward accumulates fc1.grad / fc2.grad and writes dL/dx.
#pragma once

#include <string>
#include <vector>

#include "moe/nn/model_config.h"
#include "moe/nn/parameter.h"
#include "moe/nn/tensor_parallel.h"

namespace moe::nn {

struct DenseMLPContext {
  Shape input_shape;
  Tensor x;           // [T, H] (this rank's rows under sequence parallelism: the backward
                      // gathers them again)
  Tensor fc1_out;     // [T, 2F]
  Tensor activation;  // [T, F]
};

class DenseMLP {
 public:
  DenseMLP() = default;
  // Width --ffn-hidden-size; parameters named prefix + "gate_up_proj.weight" and
  // prefix + "down_proj.weight".
  DenseMLP(const ModelConfig& config, int64_t layer, const std::string& prefix, DType dtype,
           Device device, uint64_t seed, const TensorParallel& tp = {});

  // x [..., H] -> y like x.
  Tensor forward(const Tensor& x, DenseMLPContext& ctx) const;
  Tensor backward(const Tensor& dy, DenseMLPContext& ctx);

  std::vector<Parameter*> parameters() { return {&fc1, &fc2}; }
  void zero_grad() {
    fc1.zero_grad();
    fc2.zero_grad();
  }

  Parameter fc1;  // [2F, H] ([2 F/P, H] under TP)
  Parameter fc2;  // [H, F] ([H, F/P])

 private:
  int64_t hidden_ = 0;
  TensorParallel tp_;
  DType dtype_ = DType::f32;
};

}  // namespace moe::nn
