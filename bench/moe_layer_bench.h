// `moe bench moe-layer`: forward and forward+backward time of one MoE layer on the published
// shapes, TFLOP/s counted from the expert GEMMs only, peak memory, and ratios to the GPU's
// measured dense GEMM rate and to the PyTorch (torch._grouped_mm) figures of the same GPU.
//
// FLOPs: forward = 6 T K H F (+ 6 T H S with a shared expert of width S); fwd+bwd = 3x.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::bench {

struct MoELayerBenchOptions {
  std::vector<std::string> shapes;  // empty: all shapes for the device
  std::vector<int64_t> tokens;      // empty: 8192 and 16384 on GPU, 256 on CPU
  std::vector<std::string> routings{"balanced", "skewed"};
  std::string dispatcher = "alltoall";
  // Grouped-GEMM backends to compare: automatic, per_expert_lt, per_expert_streams,
  // per_expert_threads, chunked_batched, grouped_batched, cutlass (ops/grouped_gemm.h).
  std::vector<std::string> gemm_backends{"automatic"};
  int warmup = 3;
  int iters = 10;
  bool stages = true;  // also print where the time goes, per stage
  // Also time the forward+backward captured as one CUDA graph and replayed (GPU; a row
  // "<backend>+graph", or why the layer could not be captured: it read its counts on the host).
  bool cuda_graph = false;
  bool cpu = false;  // force the CPU even when a GPU is present
};

int run_moe_layer_bench(const MoELayerBenchOptions& options);

}  // namespace moe::bench
