// Internal: the CUDA halves of Tensor's element-wise methods (tensor_cuda.cu), called by
// tensor.cpp / rng.cpp for CUDA tensors. Not part of the public API.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::detail {

void cast_cuda(const Tensor& src, Tensor& dst);  // same device, same numel
void fill_cuda(Tensor& t, double value);
void fill_uniform_cuda(Tensor& t, uint64_t seed, float lo, float hi, uint64_t offset);
void fill_normal_cuda(Tensor& t, uint64_t seed, double mean, double stddev, uint64_t offset);

}  // namespace moe::detail
