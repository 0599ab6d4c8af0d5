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

CutlassTiles cutlass_tiles_for(bool wgrad, int64_t rows, int64_t experts, int64_t n, int64_t k) {
  (void)rows, (void)experts, (void)n, (void)k;
  return wgrad ? cutlass_grouped::kDefaultWgrad : cutlass_grouped::kDefaultForward;
}

bool grouped_gemm_cutlass_built() {
  return MOE_WITH_CUTLASS;
}

}  // namespace moe::ops
