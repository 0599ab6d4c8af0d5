// Internal: CUDA launchers of SwiGLU and the sigmoid gate (swiglu_cuda.cu). Plain C++ so
// swiglu_cpu.cpp can call them after checking the arguments and allocating the outputs.
#pragma once

#include "moe/core/tensor.h"

namespace moe::ops::detail {

// h [R, F] from fc1_out [R, 2F]; probs [R] or undefined.
void swiglu_forward_cuda(const Tensor& fc1_out, const Tensor& probs, Tensor& h);
// d_fc1 [R, 2F]; d_probs [R] (left alone when undefined).
void swiglu_backward_cuda(const Tensor& grad_h, const Tensor& fc1_out, const Tensor& probs,
                          Tensor& d_fc1, Tensor& d_probs);

void sigmoid_gate_forward_cuda(const Tensor& out, const Tensor& gate_logits, Tensor& y);
void sigmoid_gate_backward_cuda(const Tensor& grad_y, const Tensor& out, const Tensor& gate_logits,
                                Tensor& d_out, Tensor& d_gate);

}  // namespace moe::ops::detail
