// The cutlass backend's tile configurations (grouped_gemm_cutlass.h): their names, and which one
// a call runs by shape. Plain C++, in every build (a CPU build names the configurations too and
// refuses the backend itself).
#include <string>
#include <vector>

#include "moe/core/error.h"
#include "moe/ops/grouped_gemm_cutlass.h"
#include "moe/ops/grouped_gemm_cutlass_call.h"

namespace moe::ops {

const char* cutlass_tiles_name(CutlassTiles tiles) {
  switch (tiles) {
    case CutlassTiles::by_shape:
      return "by_shape";
    case CutlassTiles::coop_128x128:
      return "coop_128x128";
    case CutlassTiles::coop_128x256:
      return "coop_128x256";
    case CutlassTiles::coop_256x128:
      return "coop_256x128";
    case CutlassTiles::pingpong_128x128:
      return "pingpong_128x128";
    case CutlassTiles::pingpong_64x256:
      return "pingpong_64x256";
  }
  return "?";
}

std::vector<CutlassTiles> all_cutlass_tiles() {
  return {CutlassTiles::coop_128x128, CutlassTiles::coop_128x256, CutlassTiles::coop_256x128,
          CutlassTiles::pingpong_128x128, CutlassTiles::pingpong_64x256};
}

CutlassTiles parse_cutlass_tiles(const std::string& name) {
  std::string names = "by_shape";
  if (name == names) return CutlassTiles::by_shape;
  for (CutlassTiles tiles : all_cutlass_tiles()) {
    if (name == cutlass_tiles_name(tiles)) return tiles;
    names += std::string(", ") + cutlass_tiles_name(tiles);
  }
  MOE_FAIL("unknown cutlass tile configuration '", name, "' (choose from ", names, ")");
}

// Read from `moe bench grouped-gemm` on an H100 (docs/perf.md, 2026-12-05: the experts' six
// GEMMs of Mixtral-8x7B, Qwen3-30B-A3B, DeepSeek-V3 and one EP-8 rank of it, T = 8192, balanced
// and skewed routing, every configuration):
//   forward / dgrad (M = an expert's rows, N = n, K = k). Wide tiles win everywhere over the
//     128 x 128 tile (by 4-80%: it rereads each x tile once per 128 output columns).
//     Large experts (>= 1024 rows on average: Mixtral, the EP-8 rank) take 256 x 128 (two
//     128-row warp groups over one weight tile); fine-grained ones (256-512 rows) take 128 x 256,
//     whose 128-row tiles waste less of a short expert. With a short reduction (K <= 1536:
//     Qwen3's fc2 forward, K = 768, and fc1 dgrad, K = 1536) ping-pong 128 x 128 is best
//     (1-13%): one warp group's epilogue overlaps the other's few MMAs.
//   wgrad (M = n, N = k, K = an expert's rows). With a few hundred rows per expert (Qwen3,
//     DeepSeek-V3) the configurations are within noise of each other (the f32 output's traffic
//     bounds them), and ping-pong 128 x 128 is as good as any. With >= 1024 rows and k > n (the
//     EP-8 rank's fc1 and Mixtral's fc2 gradients) cooperative 128 x 256 is 5-30% faster, more
//     when accumulating; with k <= n (their other gradient) ping-pong 128 x 128 stays best.
CutlassTiles cutlass_tiles_for(bool wgrad, int64_t rows, int64_t experts, int64_t n, int64_t k) {
  constexpr int64_t kLargeExpertRows = 1024;
  constexpr int64_t kShortReduction = 1536;
  const int64_t mean_rows = experts > 0 ? rows / experts : rows;
  if (wgrad) {
    return mean_rows >= kLargeExpertRows && k > n ? CutlassTiles::coop_128x256
                                                  : CutlassTiles::pingpong_128x128;
  }
  if (mean_rows >= kLargeExpertRows) return CutlassTiles::coop_256x128;
  return k <= kShortReduction ? CutlassTiles::pingpong_128x128 : CutlassTiles::coop_128x256;
}

// Read from the same measurements, cuBLAS (the automatic backend's chunked_batched /
// per_expert_lt) against the by-shape configuration above:
//   forward / dgrad. DeepSeek-V3's 256 rows an expert: cutlass 4-56% faster on all four (the
//     chunks of 128 rows leave cuBLAS short tiles); Qwen3's 512: cuBLAS 5-14% faster; 2048
//     (Mixtral, the EP-8 rank): within a few percent either way, cuBLAS ahead on most.
//   wgrad. Written (one micro-batch a step, or the first): cuBLAS ahead everywhere (4-67%).
//     Accumulated (every later micro-batch): cutlass 3-14% ahead at 256-512 rows an expert (the
//     f32 read-modify-write in its epilogue), cuBLAS ahead at 2048.
bool automatic_takes_cutlass(bool wgrad, bool accumulate, int64_t rows, int64_t experts) {
  constexpr int64_t kForwardMaxRows = 384;
  constexpr int64_t kAccumulateMaxRows = 512;
  const int64_t mean_rows = experts > 0 ? rows / experts : rows;
  if (!wgrad) return mean_rows <= kForwardMaxRows;
  return accumulate && mean_rows <= kAccumulateMaxRows;
}

bool grouped_gemm_cutlass_built() {
  return MOE_WITH_CUTLASS;
}

}  // namespace moe::ops
