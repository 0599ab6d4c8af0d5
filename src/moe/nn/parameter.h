// A trainable tensor and its gradient. Gradient rule (everywhere in nn/): a backward
// *accumulates* into Parameter::grad (so micro-batches add up), and *writes* the gradient of
// its input activations. grad is fp32 when the value is bf16/f16 (fp32 main gradients).
//
// zero_grad() is lazy: it marks the gradient as zero, and the first accumulation after it
// writes (beta = 0) instead of reading zeros back (beta = 1). For fine-grained experts the
// weight-gradient GEMMs are bound by fp32 gradient traffic, which this halves, and a step
// saves the memset of every gradient. Read gradients through grad_value().
#pragma once

#include <string>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::nn {

struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;              // meaningful only when !grad_is_zero; see grad_value()
  bool grad_is_zero = true;  // grad is zero but not yet written

  // Creates value (dtype, device) and a zero grad (f32 for 16-bit values).
  static Parameter make(std::string name, const Shape& shape, DType dtype, Device device);
  void zero_grad() { grad_is_zero = true; }
  // For a backward about to accumulate into grad: the beta of that accumulation (0 right
  // after zero_grad, else 1); the gradient counts as written afterwards.
  float take_grad_beta() {
    const float beta = grad_is_zero ? 0.0f : 1.0f;
    grad_is_zero = false;
    return beta;
  }
  // The gradient, materialising the zeros of a lazy zero_grad().
  Tensor& grad_value() {
    if (grad_is_zero) {
      grad.zero_();
      grad_is_zero = false;
    }
    return grad;
  }
};

inline DType grad_dtype_for(DType value_dtype) {
  return (value_dtype == DType::bf16 || value_dtype == DType::f16) ? DType::f32 : value_dtype;
}

inline Parameter Parameter::make(std::string name, const Shape& shape, DType dtype, Device device) {
  Parameter p;
  p.name = std::move(name);
  p.value = Tensor::zeros(shape, dtype, device);
  p.grad = Tensor::zeros(shape, grad_dtype_for(dtype), device);
  return p;
}

}  // namespace moe::nn
