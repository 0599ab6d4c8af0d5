// `moe bench attention`: forward, backward and forward+backward time of causal attention
// (ops/attention.h) per backend (cudnn, native, automatic) on long-sequence shapes of ~16k
// tokens, in TFLOP/s and as a fraction of the GPU's measured dense bf16 GEMM rate.
//
// FLOPs, FlashAttention's convention: the forward is 2 GEMMs (q k^T and P v) over the visible
// (i, j) pairs, S^2 / 2 of them when causal (S^2 when full):
//   forward = 2 * B * Hq * pairs * (D + Dv)     (= 4 * B * S^2/2 * Hq * D for D = Dv, causal)
// the backward 2.5x that (5 GEMMs: the recomputed q k^T, dP = dO v^T, dV, dQ, dK), and
// forward+backward 3.5x. Softmax, masking and the recomputation's exponentials are not counted.
#pragma once

#include <string>
#include <vector>

namespace moe::bench {

struct AttentionBenchOptions {
  std::vector<std::string> shapes;  // empty: every GPU shape (the tiny one on the CPU)
  std::vector<std::string> backends{"cudnn", "native"};  // automatic, cudnn, native
  int warmup = 3;
  int iters = 10;
  bool cpu = false;  // force the CPU even when a GPU is present
};

int run_attention_bench(const AttentionBenchOptions& options);

}  // namespace moe::bench
