// Internal: the CUDA half of the fused linear + cross-entropy (cross_entropy_cuda.cu). Plain
// C++ (no CUDA headers) so cross_entropy_cpu.cpp can call it after checking the arguments.
// Every tensor here is f32 except hidden / weight (f32 or bf16), labels (i64 or i32), the
// loss mask (f32 or undefined) and dh (hidden's dtype).
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"
#include "moe/ops/cross_entropy.h"

namespace moe::ops::detail {

// Fills out.max / out.sum_exp / out.label_logit ([T] f32, allocated by the caller) for the
// vocabulary rows [vocab_start, vocab_start + weight.size(0)).
void cross_entropy_partials_cuda(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                                 int64_t vocab_start, int64_t chunk_size,
                                 CrossEntropyPartials& out);

// out = the merge of a and b (out may be a).
void cross_entropy_merge_cuda(const CrossEntropyPartials& a, const CrossEntropyPartials& b,
                              CrossEntropyPartials& out);

// From merged partials to out.loss / token_losses / logsumexp / weight_sum (allocated, f32).
void cross_entropy_finalize_cuda(const CrossEntropyPartials& merged, const Tensor& labels,
                                 const Tensor& loss_mask, int64_t vocab_size,
                                 const CrossEntropyOptions& options, CrossEntropyResult& out);

// Writes grad_hidden [T, H] (hidden's dtype, allocated) and adds into grad_weight (f32, may be
// undefined).
void linear_cross_entropy_backward_cuda(double grad_loss, const Tensor& hidden,
                                        const Tensor& weight, const Tensor& labels,
                                        const Tensor& loss_mask, const CrossEntropyResult& saved,
                                        Tensor& grad_weight, const CrossEntropyOptions& options,
                                        int64_t vocab_start, Tensor& grad_hidden);

// Forward and backward by token chunks (cross_entropy.h): fills `result` (allocated, f32) and
// grad_hidden (allocated), adds into grad_weight (f32, may be undefined).
void linear_cross_entropy_forward_backward_cuda(double grad_loss, const Tensor& hidden,
                                                const Tensor& weight, const Tensor& labels,
                                                const Tensor& loss_mask, Tensor& grad_weight,
                                                const CrossEntropyOptions& options,
                                                CrossEntropyResult& result, Tensor& grad_hidden);

}  // namespace moe::ops::detail
