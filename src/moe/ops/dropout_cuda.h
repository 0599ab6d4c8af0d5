// Internal: CUDA launchers of dropout (dropout_cuda.cu). Plain C++ so dropout_cpu.cpp can call
// them after checking the arguments; the mask formula is dropout.h's.
#pragma once

#include "moe/core/tensor.h"
#include "moe/ops/dropout.h"

namespace moe::ops::detail {

// y = dropout(x) for x, y [S, B, F] of one dtype (y may be x: in place); `scale` = 1 / (1 - p)
// in the compute type (0 when p = 1).
void dropout_cuda(const Tensor& x, Tensor& y, const DropoutArgs& args, double scale);
// mask [S, B, F] u8.
void dropout_mask_cuda(Tensor& mask, const DropoutArgs& args);

}  // namespace moe::ops::detail
