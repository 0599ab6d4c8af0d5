// The shared expert: a dense SwiGLU MLP of width S (--moe-shared-expert-intermediate-size)
// that every token passes through, added to the routed experts' output; optionally scaled by
// a sigmoid gate sigmoid(x w_g^T) per token (Qwen2-MoE's shared_expert_gate).
//   h1 = x fc1^T [T, 2S] ([gate; up] weights), h = silu(gate) * up, y = h fc2^T [T, H]
// Gradient rule: backward accumulates parameter grads and writes dL/dx.
#pragma once

#include "moe/nn/moe_config.h"
#include "moe/nn/parameter.h"

namespace moe::nn {

struct SharedExpertContext {
  Tensor x, fc1_out, activation, output, gate_logits;
};

class SharedExpert {
 public:
  SharedExpert(const MoEConfig& config, Device device);
  Tensor forward(const Tensor& x, SharedExpertContext& ctx);
  Tensor backward(const Tensor& grad_y, SharedExpertContext& ctx);

  Parameter fc1;   // [2S, H]
  Parameter fc2;   // [H, S]
  Parameter gate;  // [1, H], only with moe_shared_expert_gate

 private:
  bool gated_ = false;
};

}  // namespace moe::nn
