// Internal to the cutlass grouped GEMM backend (grouped_gemm_cutlass.h): one grouped GEMM call
// as the dispatcher (grouped_gemm_cutlass_dispatch.cu) hands it to the files that instantiate
// CUTLASS's kernels, one (family, tile configuration) per file so they compile in parallel.
// Plain C++.
#pragma once

#include <cstdint>

#include "moe/core/dtype.h"
#include "moe/core/stream.h"
#include "moe/ops/grouped_gemm_cutlass.h"

namespace moe::ops::cutlass_grouped {

// Row-major operands, rows grouped by expert (grouped_gemm.h):
//   forward  a = x [rows, k], b = w [E, n, k] (fwd_nk) or [E, k, n] (fwd_kn), out = y [rows, n]
//   wgrad    a = dy [rows, n], b = x [rows, k], out = dw [E, n, k] (out = beta * out + dy^T x)
struct Call {
  bool wgrad = false;            // names the op in the device's error messages
  const void* counts = nullptr;  // tokens_per_expert on the device, [experts]
  bool counts_i64 = true;        // i64, else i32
  int experts = 0;
  int64_t rows = 0;
  int64_t n = 0, k = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* out = nullptr;
  float beta = 0.0f;         // wgrad: 1 accumulates into dw
  int64_t* total = nullptr;  // device, or null: receives sum(counts), for the forward's zeroing
  int device = 0;
  int sm_count = 0;
  StreamHandle stream = nullptr;
};

// Each runs `call` on its stream with the tile configuration C (never by_shape): the
// argument-table kernel (which validates the counts and writes *call.total when given), then the
// grouped GEMM. `dtype` is a's and b's; the forward writes that dtype, the wgrad `out_dtype`.
// Every configuration has bf16 -> bf16 forwards and the bf16 -> f32 wgrad (the training path);
// f16, and the wgrad into bf16, only kDefaultForward / kDefaultWgrad (others are refused).
template <CutlassTiles C>
void run_fwd_nk(DType dtype, const Call& call);  // y_e = x_e w_e^T, w [E, N, K]
template <CutlassTiles C>
void run_fwd_kn(DType dtype, const Call& call);  // y_e = x_e w_e,   w [E, K, N]
template <CutlassTiles C>
void run_wgrad(DType in, DType out_dtype, const Call& call);

// What a configuration is (grouped_gemm_cutlass.h names them): the schedule, the output tile
// M x N (K tiles of 64) and the cluster (M x N CTAs).
struct TileSpec {
  bool pingpong = false;
  int m = 128, n = 128;
  int cluster_m = 1, cluster_n = 2;
};

constexpr TileSpec tile_spec(CutlassTiles tiles) {
  switch (tiles) {
    case CutlassTiles::coop_128x256:
      return {false, 128, 256, 2, 1};
    case CutlassTiles::coop_256x128:
      return {false, 256, 128, 1, 2};
    case CutlassTiles::pingpong_128x128:
      return {true, 128, 128, 1, 2};
    case CutlassTiles::pingpong_64x256:
      return {true, 64, 256, 2, 1};
    case CutlassTiles::coop_128x128:
    case CutlassTiles::by_shape:
      break;
  }
  return {false, 128, 128, 1, 2};
}

inline constexpr CutlassTiles kDefaultForward = CutlassTiles::coop_128x128;
inline constexpr CutlassTiles kDefaultWgrad = CutlassTiles::pingpong_128x128;

}  // namespace moe::ops::cutlass_grouped
