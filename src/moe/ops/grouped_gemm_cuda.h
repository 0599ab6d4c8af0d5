// Internal: the CUDA half of the grouped GEMM (grouped_gemm_cuda.cu), called by
// grouped_gemm_cpu.cpp after it has checked the arguments and validated the counts.
// Plain C++ (no CUDA headers).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "moe/core/tensor.h"
#include "moe/ops/grouped_gemm.h"

namespace moe::ops {

// Copies the i64/i32 counts of a CUDA tensor to the host: one D2H copy on the tensor's current
// stream and a wait for it (the one host synchronisation grouped_gemm.h documents).
std::vector<int64_t> read_counts_cuda(const Tensor& tokens_per_expert);

// `counts` are the validated host counts (non-negative, sum <= rows).
// `backend`: the caller's choice (grouped_gemm.h); cutlass reaches here only for calls it does
// not take, and runs per_expert_lt.
void grouped_gemm_cuda(const Tensor& x, const Tensor& w, bool trans_w,
                       std::span<const int64_t> counts, Tensor& y, GroupedGemmBackend backend);
void grouped_gemm_wgrad_cuda(const Tensor& dy, const Tensor& x, std::span<const int64_t> counts,
                             Tensor& dw, bool accumulate, GroupedGemmBackend backend);

}  // namespace moe::ops
