// The `cutlass` grouped GEMM backend (GroupedGemmBackend::cutlass): the experts' products as one
// persistent CUTLASS sm90 grouped GEMM (TMA loads, warp-specialised producer/consumer warps,
// wgmma) that takes the per-expert row counts from device memory. No host round trip: a one-block
// kernel turns the device counts into the GEMM's argument table (each expert's offset, problem
// shape, operand pointers and strides), the grouped GEMM runs on it, and a kernel zeroes what the
// contract of grouped_gemm.h says is zero (y's rows past sum(counts); dw of experts without rows
// when not accumulating), reading the sum and the counts on the device. No row padding.
//
// Errors: the counts are validated on the device, since there is no host to tell without a
// synchronisation: a negative count or a sum above the row count prints the op, the expert and
// the value (device printf) and traps, which ends the process's CUDA context (every later CUDA
// call fails). grouped_gemm_cpu.cpp's host checks of shapes and dtypes still run first.
//
// Plain C++ (no CUDA headers): called by grouped_gemm_cpu.cpp. Defined in
// grouped_gemm_cutlass_dispatch.cu, with the GEMMs in grouped_gemm_cutlass_{fwd,wgrad}_*.cu
// (built when CMake finds CUTLASS's headers: MOE_WITH_CUTLASS).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::ops {

// The kernel configurations the backend has: output tile M x N (K tiles of 64), the schedule
// (cooperative: two consumer warp groups split one tile; ping-pong: each consumer warp group
// owns a tile, one's epilogue overlapping the other's MMAs) and a cluster of two CTAs along the
// tile's shorter side, so the operand they share is loaded once (TMA multicast). by_shape
// lets the backend pick for the call (cutlass_tiles_for).
enum class CutlassTiles {
  by_shape,
  coop_128x128,      // cluster 1 x 2
  coop_128x256,      // cluster 2 x 1
  coop_256x128,      // cluster 1 x 2
  pingpong_128x128,  // cluster 1 x 2
  pingpong_64x256,   // cluster 2 x 1
};

const char* cutlass_tiles_name(CutlassTiles tiles);  // "coop_128x128", ...
// The configuration of that name; an error listing the names otherwise.
CutlassTiles parse_cutlass_tiles(const std::string& name);
// Every configuration but by_shape, in declaration order.
std::vector<CutlassTiles> all_cutlass_tiles();

// What by_shape runs for a forward / dgrad (wgrad = false: y [rows, n] = x [rows, k] w_e) or a
// weight gradient (wgrad = true: dw_e [n, k] = dy_e^T x_e, reduced over the expert's rows) over
// `rows` rows of `experts` experts, bf16 in (f16 and the wgrad into bf16 have only the default
// configurations).
CutlassTiles cutlass_tiles_for(bool wgrad, int64_t rows, int64_t experts, int64_t n, int64_t k);

// Whether GroupedGemmBackend::automatic runs a call that qualifies for this backend on it rather
// than on cuBLAS: the forward / dgrad of fine-grained experts (at most 384 rows each on average)
// and the accumulated weight gradient of experts of at most 512 rows (measured: docs/perf.md).
bool automatic_takes_cutlass(bool wgrad, bool accumulate, int64_t rows, int64_t experts);

// Whether this build has the backend (CUTLASS's headers were found at configure time).
bool grouped_gemm_cutlass_built();

// Whether a grouped_gemm (a = x, b = w, out = y) or grouped_gemm_wgrad (a = dy, b = x,
// out = dw) call can run on CUTLASS: the backend is built, the tensors are on one CUDA device of
// compute capability 9.0 (the sm_90a kernels run nowhere else), a and b are bf16 or f16 (one
// dtype), out is that dtype or f32, no tensor is empty, every row length (the last dimension of
// a, b and out) is a multiple of 8 elements and every base pointer 16-byte aligned (TMA's rule
// for addresses and strides), and the sizes fit the GEMM's 32-bit problem shapes. Calls that do
// not qualify run the cuBLAS path (counts read to the host).
bool grouped_gemm_cutlass_qualifies(const Tensor& a, const Tensor& b, const Tensor& out);

// The backend's entry points, for calls that qualify (the arguments are already checked).
// `tiles` other than by_shape is for measuring the configurations (`moe bench grouped-gemm`);
// a configuration that has no kernel for the dtypes is an error naming it.
void grouped_gemm_cutlass(const Tensor& x, const Tensor& w, bool trans_w,
                          const Tensor& tokens_per_expert, Tensor& y,
                          CutlassTiles tiles = CutlassTiles::by_shape);
void grouped_gemm_wgrad_cutlass(const Tensor& dy, const Tensor& x, const Tensor& tokens_per_expert,
                                Tensor& dw, bool accumulate,
                                CutlassTiles tiles = CutlassTiles::by_shape);

}  // namespace moe::ops
