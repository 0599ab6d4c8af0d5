// A trainable tensor and its gradient. Gradient rule (everywhere in nn/): a backward
// *accumulates* into Parameter::grad (so micro-batches add up), and *writes* the gradient of
// its input activations. grad is fp32 when the value is bf16/f16 (fp32 main gradients).
//
// zero_grad() is lazy: it marks the gradient as zero, and the first accumulation after it
// writes (beta = 0) instead of reading zeros back (beta = 1). For fine-grained experts the
// weight-gradient GEMMs are bound by fp32 gradient traffic, which this halves, and a step
// saves the memset of every gradient. Read gradients through grad_value().
//
// Parallel layout (docs/distributed-training.md): which ranks hold copies of the parameter, so
// which group sums its gradient, and where this rank's value sits in the global tensor. A dense
// parameter is replicated over DP x CP; an expert parameter over the expert-data-parallel group
// and split by EP (experts) and ETP (FFN dimension). The split is a box of a "view" of the
// global tensor: the global tensor re-read with a shape of which this rank's value is one
// rectangular block. fc1 [E, 2F, H] is viewed as [E, 2, F, H]: under ETP the local
// [E/EP, 2 F/ETP, H] is [gate shard; up shard], the box (ep E/EP, 0, etp F/ETP, 0) of shape
// [E/EP, 2, F/ETP, H]. Every mapping uses the same view for a parameter, so checkpoints written
// under one mapping are boxes another mapping can cut its own boxes from.
#pragma once

#include <string>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::nn {

// Which group holds copies of a parameter and sums its gradient.
enum class GradGroup {
  dense,   // replicated over DP x CP (attention, dense MLPs, norms, router, shared expert)
  expert,  // routed experts: replicated over the expert-data-parallel group (EDP)
};

struct ParamLayout {
  GradGroup grad_group = GradGroup::dense;
  Shape global_shape;               // the whole tensor; empty: the value is the whole tensor
  Shape view_shape;                 // the global tensor's slicing shape; empty: global_shape
  std::vector<int64_t> box_offset;  // this rank's block in view_shape; empty: all zeros
  Shape box_shape;                  // its shape (numel = the value's); empty: view_shape
  // Tensor parallelism (tensor_parallel.h): a copy on every rank of the TP group (norms, the
  // router, ...) rather than a TP block; counted once in the gradient norm and written once
  // in a checkpoint.
  bool tp_replicated = false;
  // Each TP rank's gradient of this replicated parameter is a partial sum (its own sequence
  // rows or heads): the data-parallel wrapper sums it over TP before anything else reads it.
  bool tp_partial_grad = false;
  // Pipeline parallelism: held by the first and the last stage (the embedding, for a tied
  // output layer or MTP); the copies' gradients are summed over the two before anything else
  // reads them. pp_copy: this rank's is the last stage's copy, which the gradient norm leaves
  // out and checkpoints do not write (the first stage's counts and is written).
  bool pp_shared = false;
  bool pp_copy = false;

  bool is_sharded() const { return !global_shape.empty(); }
};

struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;               // meaningful only when !grad_is_zero; see grad_value()
  bool grad_is_zero = true;  // grad is zero but not yet written
  ParamLayout layout;        // dense and whole unless the module that owns it says otherwise

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

// The layout with the defaults filled in from the value: global shape, view, box.
inline Shape global_shape_of(const Parameter& p) {
  return p.layout.global_shape.empty() ? p.value.shape() : p.layout.global_shape;
}
inline Shape view_shape_of(const Parameter& p) {
  return p.layout.view_shape.empty() ? global_shape_of(p) : p.layout.view_shape;
}
inline Shape box_shape_of(const Parameter& p) {
  return p.layout.box_shape.empty() ? view_shape_of(p) : p.layout.box_shape;
}
inline std::vector<int64_t> box_offset_of(const Parameter& p) {
  return p.layout.box_offset.empty() ? std::vector<int64_t>(view_shape_of(p).size(), 0)
                                     : p.layout.box_offset;
}

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
