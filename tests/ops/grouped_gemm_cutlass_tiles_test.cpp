// The cutlass backend's tile configurations (ops/grouped_gemm_cutlass.h), on any machine: the
// names round-trip and an unknown one lists them; the by-shape choice always names a
// configuration with the bf16 kernels, and picks what the measurements in
// grouped_gemm_cutlass_tiles.cpp say for the published shapes.
#include <gtest/gtest.h>

#include <string>

#include "common/check.h"
#include "moe/ops/grouped_gemm_cutlass.h"

namespace moe {
namespace {

using ops::CutlassTiles;

TEST(GroupedGemmCutlassTiles, NamesRoundTrip) {
  EXPECT_EQ(ops::all_cutlass_tiles().size(), 5u);
  for (CutlassTiles tiles : ops::all_cutlass_tiles()) {
    EXPECT_NE(tiles, CutlassTiles::by_shape);
    EXPECT_EQ(ops::parse_cutlass_tiles(ops::cutlass_tiles_name(tiles)), tiles);
  }
  EXPECT_EQ(ops::parse_cutlass_tiles("by_shape"), CutlassTiles::by_shape);
  EXPECT_SAYS(test::message_of([] { (void)ops::parse_cutlass_tiles("coop_64x64"); }), "coop_64x64",
              "by_shape", "coop_128x128", "pingpong_64x256");
}

TEST(GroupedGemmCutlassTiles, ByShapeNamesAConfiguration) {
  for (bool wgrad : {false, true})
    for (int64_t experts : {1, 8, 32, 128, 256})
      for (int64_t n : {8, 768, 1536, 2048, 4096, 7168, 28672})
        for (int64_t k : {8, 768, 2048, 7168, 14336})
          for (int64_t rows : {0, 1, 4096, 65536}) {
            const CutlassTiles tiles = ops::cutlass_tiles_for(wgrad, rows, experts, n, k);
            EXPECT_NE(tiles, CutlassTiles::by_shape);
            EXPECT_NE(std::string(ops::cutlass_tiles_name(tiles)), "?");
          }
}

}  // namespace
}  // namespace moe
