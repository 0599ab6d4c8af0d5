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

// The measured choices (grouped_gemm_cutlass_tiles.cpp) for the published shapes at T = 8192.
TEST(GroupedGemmCutlassTiles, ByShapeForThePublishedShapes) {
  const int64_t T = 8192;
  // Qwen3-30B-A3B: H 2048, F 768, 128 experts, top 8: 512 rows an expert.
  const int64_t qwen = T * 8;
  EXPECT_EQ(ops::cutlass_tiles_for(false, qwen, 128, 1536, 2048), CutlassTiles::coop_128x256);
  EXPECT_EQ(ops::cutlass_tiles_for(false, qwen, 128, 2048, 768), CutlassTiles::pingpong_128x128);
  EXPECT_EQ(ops::cutlass_tiles_for(false, qwen, 128, 768, 2048), CutlassTiles::coop_128x256);
  EXPECT_EQ(ops::cutlass_tiles_for(false, qwen, 128, 2048, 1536), CutlassTiles::pingpong_128x128);
  EXPECT_EQ(ops::cutlass_tiles_for(true, qwen, 128, 2048, 768), CutlassTiles::pingpong_128x128);
  EXPECT_EQ(ops::cutlass_tiles_for(true, qwen, 128, 1536, 2048), CutlassTiles::pingpong_128x128);
  // DeepSeek-V3: H 7168, F 2048, 256 experts (256 rows each) / one EP-8 rank's 32 (2048 rows).
  EXPECT_EQ(ops::cutlass_tiles_for(false, T * 8, 256, 4096, 7168), CutlassTiles::coop_128x256);
  EXPECT_EQ(ops::cutlass_tiles_for(false, T * 8, 32, 4096, 7168), CutlassTiles::coop_256x128);
  EXPECT_EQ(ops::cutlass_tiles_for(true, T * 8, 32, 4096, 7168), CutlassTiles::coop_128x256);
  EXPECT_EQ(ops::cutlass_tiles_for(true, T * 8, 32, 7168, 2048), CutlassTiles::pingpong_128x128);
  // Mixtral-8x7B: H 4096, F 14336, 8 experts, top 2: 2048 rows an expert.
  EXPECT_EQ(ops::cutlass_tiles_for(false, T * 2, 8, 28672, 4096), CutlassTiles::coop_256x128);
  EXPECT_EQ(ops::cutlass_tiles_for(true, T * 2, 8, 4096, 14336), CutlassTiles::coop_128x256);
  EXPECT_EQ(ops::cutlass_tiles_for(true, T * 2, 8, 28672, 4096), CutlassTiles::pingpong_128x128);
}

// automatic's measured split between cuBLAS and cutlass (grouped_gemm_cutlass_tiles.cpp).
TEST(GroupedGemmCutlassTiles, AutomaticTakesCutlassWhereItMeasuredFaster) {
  const int64_t rows = 8192 * 8;
  // Forward / dgrad: DeepSeek-V3's 256 rows an expert, not Qwen3's 512 or an EP-8 rank's 2048.
  EXPECT_TRUE(ops::automatic_takes_cutlass(false, false, rows, 256));
  EXPECT_FALSE(ops::automatic_takes_cutlass(false, false, rows, 128));
  EXPECT_FALSE(ops::automatic_takes_cutlass(false, false, rows, 32));
  // Weight gradients: only accumulated ones, of experts of at most 512 rows.
  EXPECT_FALSE(ops::automatic_takes_cutlass(true, false, rows, 256));
  EXPECT_FALSE(ops::automatic_takes_cutlass(true, false, rows, 128));
  EXPECT_TRUE(ops::automatic_takes_cutlass(true, true, rows, 256));
  EXPECT_TRUE(ops::automatic_takes_cutlass(true, true, rows, 128));
  EXPECT_FALSE(ops::automatic_takes_cutlass(true, true, rows, 32));
  // No experts: the rows count as one.
  EXPECT_FALSE(ops::automatic_takes_cutlass(false, false, rows, 0));
}

}  // namespace
}  // namespace moe
