// Internal: the CUDA launcher of attention_merge_ (attention_merge_cuda.cu). Plain C++ so
// attention_merge_cpu.cpp can call it after checking the arguments.
#pragma once

#include "moe/core/tensor.h"
#include "moe/ops/attention_merge_rule.h"

namespace moe::ops::detail {

// out_acc, lse_acc merged in place with out_b, lse_b (f32 or bf16 out, f32 lse; checked).
void attention_merge_cuda(Tensor& out_acc, Tensor& lse_acc, const Tensor& out_b,
                          const Tensor& lse_b, const MergeShape& shape);

}  // namespace moe::ops::detail
