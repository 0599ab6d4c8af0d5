// Internal: CUDA launchers of the embedding lookup (embedding_cuda.cu). Plain C++ so
// embedding_cpu.cpp can call them after checking the arguments. ids are flattened to [T],
// y / grad_y to [T, H]; [vocab_start, vocab_start + weight rows) is the shard, ids outside
// [0, vocab_size) are invalid.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::ops::detail {

void embedding_forward_cuda(const Tensor& ids, const Tensor& weight, int64_t vocab_start,
                            int64_t vocab_size, const Tensor& invalid_count, Tensor& y);
void embedding_backward_cuda(const Tensor& grad_y, const Tensor& ids, int64_t vocab_start,
                             int64_t vocab_size, Tensor& grad_weight, bool accumulate);

}  // namespace moe::ops::detail
