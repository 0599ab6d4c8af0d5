// `moe bench grouped-gemm`: the six grouped GEMMs of an MoE layer's experts, one at a time, on
// the published shapes (moe_bench_shapes.h), by grouped-GEMM backend and by the cutlass
// backend's tile configuration, as TFLOP/s and as a fraction of the GPU's measured dense GEMM
// rate. It is what the cutlass backend's by-shape tile choice (cutlass_tiles_for) is read from.
//
// With H the hidden size, F the expert width, E experts and R = T k rows (grouped by expert, the
// counts balanced or skewed and rounded to 128-row multiples, so every backend runs the same
// problem, chunked_batched included):
//   fc1.fwd    [R, H] x fc1_e^T -> [R, 2F]      fc1.dgrad  [R, 2F] x fc1_e -> [R, H]
//   fc2.fwd    [R, F] x fc2_e^T -> [R, H]       fc2.dgrad  [R, H] x fc2_e -> [R, F]
//   fc1.wgrad  dfc1_e [2F, H] = dh1_e^T x_e     fc2.wgrad  dfc2_e [H, F] = dy_e^T h_e
// wgrads into f32 main gradients, written (beta 0: one micro-batch a step) or accumulated
// (".wgrad+=", beta 1: every later micro-batch). FLOPs 2 R n k each; a skipped cell says why.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::bench {

struct GroupedGemmBenchOptions {
  std::vector<std::string> shapes;  // empty: every GPU shape
  int64_t tokens = 8192;
  std::vector<std::string> routings{"balanced", "skewed"};
  // Columns: backends by name (ops/grouped_gemm.h), and "cutlass:<tiles>" for a cutlass tile
  // configuration (ops/grouped_gemm_cutlass.h; cutlass:by_shape is the backend's own choice).
  // Empty: automatic, cutlass:by_shape and every cutlass configuration.
  std::vector<std::string> columns;
  int warmup = 2;
  int iters = 6;
};

int run_grouped_gemm_bench(const GroupedGemmBenchOptions& options);

}  // namespace moe::bench
