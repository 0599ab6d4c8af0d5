// A trainable tensor and its gradient. Gradient rule (everywhere in nn/): a backward
// *accumulates* into Parameter::grad (so micro-batches add up), and *writes* the gradient of
// its input activations. grad is fp32 when the value is bf16/f16 (fp32 main gradients).
#pragma once

#include <string>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::nn {

struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;  // allocated with the parameter, zeroed by zero_grad()

  // Creates value (dtype, device) and a zeroed grad (f32 for 16-bit values).
  static Parameter make(std::string name, const Shape& shape, DType dtype, Device device);
  void zero_grad() { grad.zero_(); }
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
