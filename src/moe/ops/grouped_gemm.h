// Grouped GEMM over per-expert row segments: the expert computation of an MoE layer.
//
// Rows of x are grouped by expert in order: expert e owns rows [start_e, start_e + n_e) with
// n_e = tokens_per_expert[e] and start_e = n_0 + ... + n_{e-1}. The counts live on x's device
// (they are produced there by the router and the dispatcher); sum_e n_e may be smaller than
// x's row count (an upper-bound allocation): the rows past it are set to zero in y.
//
//   forward / dgrad:  y_e = x_e @ w_e^T   (trans_w = true,  w [E, N, K], Megatron's [out, in])
//                     y_e = x_e @ w_e     (trans_w = false, w [E, K, N])
//   wgrad:            dw_e (+)= dy_e^T @ x_e          dw [E, N, K]
//
// With fc1 weights w1 [E, 2F, H] and fc2 weights w2 [E, H, F]:
//   fc1 forward  grouped_gemm(x, w1, true, n, h1)         h1 [R, 2F]
//   fc1 dgrad    grouped_gemm(dh1, w1, false, n, dx)      dx [R, H]
//   fc1 wgrad    grouped_gemm_wgrad(dh1, x, n, dw1, acc)  dw1 [E, 2F, H]
// Gradient rule: weight gradients accumulate when `accumulate` is set (and are otherwise
// written); an expert with no rows gets a zero (not a missing) weight gradient.
//
// dtypes: x, w, y share one dtype (f64, f32, bf16, f16); dw is the same dtype or f32 when the
// inputs are bf16/f16 (fp32 main gradients). tokens_per_expert is i64 or i32 [E].
// CUDA: reads the counts to the host once per call unless `host_tokens_per_expert` is given
// (the alltoall dispatcher already knows them), then runs the experts' GEMMs through cuBLAS.
#pragma once

#include <cstdint>
#include <span>

#include "moe/core/tensor.h"

namespace moe::ops {

void grouped_gemm(const Tensor& x, const Tensor& w, bool trans_w, const Tensor& tokens_per_expert,
                  Tensor& y, std::span<const int64_t> host_tokens_per_expert = {});

void grouped_gemm_wgrad(const Tensor& dy, const Tensor& x, const Tensor& tokens_per_expert,
                        Tensor& dw, bool accumulate,
                        std::span<const int64_t> host_tokens_per_expert = {});

}  // namespace moe::ops
