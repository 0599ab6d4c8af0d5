// Internal: CUDA launcher of the rotary embedding (rope_cuda.cu). Plain C++ so rope_cpu.cpp can
// call it after checking the arguments. x and y are viewed as [tokens, heads, D]; the position
// of token l is offset + (positions ? positions[l / position_divisor] : l / position_divisor).
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"
#include "moe/ops/rope.h"

namespace moe::ops::detail {

struct RotaryLaunch {
  int64_t tokens = 0, heads = 0, head_dim = 0, rotary_dim = 0;
  int64_t feature_offset = 0;  // rotated features [offset, offset + rotary_dim) of each head
  int64_t position_divisor = 1;
  int64_t position_offset = 0;
  double attention_scale = 1.0;
  RotaryLayout layout = RotaryLayout::half;
  bool inverse = false;  // the backward: rotation by -angle
};

void rotary_cuda(const Tensor& x, const Tensor& inv_freq, const Tensor& positions,
                 const RotaryLaunch& launch, Tensor& y);

}  // namespace moe::ops::detail
