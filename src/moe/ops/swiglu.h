// SwiGLU with the routing probabilities applied after the activation (the memory-efficient
// form, docs/algorithms.md), and the sigmoid output gate of a shared expert.
//
//   fc1_out [R, 2F] = [gate | up] (gate first, as Megatron's fc1 [gate; up] weight produces)
//   h [R, F] = silu(gate) * up * p            (p = probs [R]; undefined probs means p = 1)
//   backward: d_gate = dh * p * up * silu'(gate), d_up = dh * p * silu(gate),
//             d_p = sum_f silu(gate) * up * dh,   silu'(g) = s(g) (1 + g (1 - s(g)))
// Gradient rule: activation gradients are written. Computed in fp32 for bf16/f16 inputs (fp64
// for f64). dtypes: fc1_out / grad_h / h share one of f64, f32, bf16, f16 (CUDA: all four);
// probs is f32 (or f64, for the CPU gradient checks) and d_probs has probs' dtype. The d_p
// row sum runs in the compute type (a fixed-order tree on CUDA: deterministic).
// Under expert tensor parallelism each rank holds [gate shard | up shard], the same layout.
#pragma once

#include "moe/core/tensor.h"

namespace moe::ops {

Tensor swiglu_forward(const Tensor& fc1_out, const Tensor& probs);
struct SwigluGrads {
  Tensor fc1_out;  // [R, 2F]
  Tensor probs;    // [R] probs' dtype, undefined when probs was undefined
};
SwigluGrads swiglu_backward(const Tensor& grad_h, const Tensor& fc1_out, const Tensor& probs);

// Shared-expert gate: y = out * sigmoid(g), out [T, H], g [T, 1] (g = x w_gate^T), both of one
// dtype (f64, f32, bf16, f16; computed in fp32 for bf16/f16).
// backward: d_out = dy * sigmoid(g), d_g = sum_h dy * out * sigmoid(g) (1 - sigmoid(g)).
Tensor sigmoid_gate_forward(const Tensor& out, const Tensor& gate_logits);
struct SigmoidGateGrads {
  Tensor out;
  Tensor gate_logits;
};
SigmoidGateGrads sigmoid_gate_backward(const Tensor& grad_y, const Tensor& out,
                                       const Tensor& gate_logits);

}  // namespace moe::ops
