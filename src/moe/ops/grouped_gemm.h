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
// That read (one small D2H copy and a wait on x's current stream) is the only host
// synchronisation. Given host counts are trusted to match the tensor (it is not read).
// The cutlass backend (below) is the exception: on calls it takes it reads the counts on the
// device only (no synchronisation) and ignores given host counts.
// Errors: the counts must be non-negative and sum to at most x's row count (checked on the
// host, on both devices; on the device by the cutlass backend, which traps: see
// grouped_gemm_cutlass.h), and every shape/dtype mismatch names the op and the tensor.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "moe/core/tensor.h"

namespace moe::ops {

// How the CUDA path runs the experts' GEMMs (the CPU reference ignores it):
//   per_expert_lt    one cuBLASLt matmul per expert with rows (its best kernel for each shape;
//                    a launch and a tail per expert).
//   grouped_batched  one cublasGemmGroupedBatchedEx call for all experts (experts with equal
//                    row counts share a group); one launch, so small experts fill the GPU
//                    together. Used only where x, w and the output share a dtype (the
//                    combinations cuBLAS's grouped GEMM documents): a bf16 -> f32 wgrad runs
//                    per_expert_lt whatever the setting.
//   per_expert_streams  as per_expert_lt, with the experts spread round-robin over 4 side
//                    streams forked from (and joined back into) the current stream, so the
//                    GEMMs of small experts, each too small to fill the GPU, run side by side.
//   per_expert_threads  as per_expert_streams, with the launches issued by 8 host threads
//                    (each with its own stream and cuBLASLt handle): with many small experts
//                    the host's launch cost, not the GPU, bounds per_expert_lt.
//   chunked_batched  forward/dgrad only, when every expert's row count is a multiple of
//                    kGroupedGemmChunkRows: one cuBLASLt call batched over all 128-row chunks of
//                    all experts (pointer arrays), so small experts fill the GPU together in
//                    one launch. wgrad (a reduction over each expert's rows) groups the
//                    experts by row count, whole chunks making those few, and runs each group
//                    as one batched call.
//   cutlass          one persistent CUTLASS sm90 grouped GEMM (TMA, warp-specialised, wgmma)
//                    that reads the counts from device memory: no host round trip, no row
//                    padding (grouped_gemm_cutlass.h). Taken by calls that qualify (an sm_90
//                    device, bf16/f16 operands, row lengths multiples of 8 elements, 16-byte
//                    aligned tensors: grouped_gemm_cutlass_qualifies); the others run
//                    per_expert_lt after reading the counts. Only in builds that found CUTLASS's
//                    headers (scripts/setup.sh); elsewhere its name is refused.
//   automatic        (default) cutlass for the calls that qualify for it where it measured
//                    faster (automatic_takes_cutlass in grouped_gemm_cutlass.h: the forward and
//                    dgrad of experts of at most 384 rows on average, the accumulated weight
//                    gradient of experts of at most 512); otherwise, with at least 16 experts
//                    with rows, chunked_batched when the counts allow it, else
//                    per_expert_threads when they average at most 1024 rows; otherwise
//                    per_expert_lt. Measured (docs/perf.md): few large experts run best one
//                    cuBLASLt call each; many small ones leave most of the GPU idle per call and
//                    pay the host's launch rate; cuBLAS's grouped GEMM was the slowest at every
//                    MoE shape.
// Chosen per call (the MoE layer passes MoEConfig::moe_grouped_gemm_backend, the flag
// --moe-grouped-gemm-backend).
enum class GroupedGemmBackend {
  automatic,
  per_expert_lt,
  per_expert_streams,
  per_expert_threads,
  chunked_batched,
  grouped_batched,
  cutlass
};

void grouped_gemm(const Tensor& x, const Tensor& w, bool trans_w, const Tensor& tokens_per_expert,
                  Tensor& y, std::span<const int64_t> host_tokens_per_expert = {},
                  GroupedGemmBackend backend = GroupedGemmBackend::automatic);

void grouped_gemm_wgrad(const Tensor& dy, const Tensor& x, const Tensor& tokens_per_expert,
                        Tensor& dw, bool accumulate,
                        std::span<const int64_t> host_tokens_per_expert = {},
                        GroupedGemmBackend backend = GroupedGemmBackend::automatic);

// Rows per chunk of the chunked_batched backend.
inline constexpr int64_t kGroupedGemmChunkRows = 128;
// The multiple the MoE dispatcher should pad each local expert's row count to, so the grouped
// GEMM can run chunked_batched: kGroupedGemmChunkRows for CUDA bf16/f16 experts when the
// backend allows it and there are at least 16 local experts; 1 otherwise. Padding rows carry
// zero tokens with probability 0, so they change no result, only the work.
int64_t grouped_gemm_row_multiple(GroupedGemmBackend backend, Device device, DType dtype,
                                  int64_t num_local_experts);
// Whether a grouped_gemm (a = x, b = w, out = y) or grouped_gemm_wgrad (a = dy, b = x,
// out = dw, `accumulate` as passed to it) call with `backend` needs the counts on the host:
// false for the calls the cutlass backend takes (it reads them on the device), so a caller
// holding only device counts need not read them (the synchronisation) for those.
bool grouped_gemm_reads_counts(GroupedGemmBackend backend, const Tensor& a, const Tensor& b,
                               const Tensor& out, bool accumulate = false);
const char* grouped_gemm_backend_name(GroupedGemmBackend backend);
// The backend of that name; an error listing the names otherwise, and for cutlass in a build
// without it (grouped_gemm_cutlass_built()).
GroupedGemmBackend parse_grouped_gemm_backend(const std::string& name);

}  // namespace moe::ops
