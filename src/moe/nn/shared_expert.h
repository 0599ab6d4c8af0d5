// The shared expert: a dense SwiGLU MLP of width S (--moe-shared-expert-intermediate-size)
// that every token passes through, added to the routed experts' output; optionally scaled by
// a sigmoid gate sigmoid(x w_g^T) per token (Qwen2-MoE's shared_expert_gate).
//   h1 = x fc1^T [T, 2S] ([gate; up] weights), h = silu(gate) * up, y = h fc2^T [T, H]
// Tensor parallelism (tensor_parallel.h; the MoE layer hands it a sequence-parallel TP, as its
// tokens are a sequence shard): rank r holds [r S/P, (r + 1) S/P) of the width like a dense
// MLP; the tokens are gathered before fc1 and the output reduce-scattered after fc2; the gate
// is replicated and applied to this rank's tokens (partial gradient).
// Gradient rule: backward accumulates parameter grads and writes dL/dx.
#pragma once

#include "moe/nn/moe_config.h"
#include "moe/nn/parameter.h"
#include "moe/nn/tensor_parallel.h"

namespace moe::nn {

struct SharedExpertContext {
  Tensor x;  // this rank's tokens [T, H] (the backward gathers the TP group's again)
  Tensor fc1_out, activation, output, gate_logits;
};

class SharedExpert {
 public:
  SharedExpert(const MoEConfig& config, Device device, const TensorParallel& tp = {});
  Tensor forward(const Tensor& x, SharedExpertContext& ctx);
  Tensor backward(const Tensor& grad_y, SharedExpertContext& ctx);

  Parameter fc1;   // [2S, H] ([2 S/P, H] under TP)
  Parameter fc2;   // [H, S] ([H, S/P])
  Parameter gate;  // [1, H], only with moe_shared_expert_gate

 private:
  bool gated_ = false;
  TensorParallel tp_;
};

}  // namespace moe::nn
