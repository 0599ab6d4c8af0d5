// `moe bench model`: one training step's forward + backward of a whole GPTModel (embedding,
// attention, MoE / dense MLPs, norms, fused output layer + cross-entropy) on a zoo model cut to
// its first N layers, at full width and full vocabulary. No optimizer step yet: the time is
// zero_grad (lazy) + forward + backward, one micro-batch per step. Reports tokens/s, model
// TFLOP/s, MFU, the ratio to the GPU's measured dense bf16 GEMM rate (ceilings.h), peak device
// memory and the forward / backward split.
//
// Model, "name:N": nn::model_zoo(name) with num_layers = N and the MoE layer pattern's first N
// entries (DeepSeek's leading dense layers stay dense); MTP layers are dropped
// (mtp_num_layers = 0). "name" alone keeps every layer. bf16 parameters with fp32 main
// gradients on the GPU, f32 on the CPU. Input: random token ids (seeded, uniform over the
// vocabulary), labels = the next id of the same random stream; the real router routes them (no
// forced balance), so the load is whatever random ids and random weights give; the table shows
// the worst MoE layer's max/mean expert load.
//
// Model FLOPs of one step (forward + backward; the optimizer's are not counted), T = B S tokens:
//
//   FLOPs = 6 T P  +  6 T L (S/2) Hq (Dqk + Dv)
//
// Matmuls: a token through a weight of P entries costs 2 P forward (one multiply-add per
// entry) and 4 P backward (input gradient dX = dY W and weight gradient dW = dY^T X): 6 P.
// P counts the ACTIVE matmul parameters, from nn::count_parameters: attention projections, dense
// MLPs, routers (E H each, run in fp32 but counted alike), the k routed experts of each MoE
// layer, shared experts and their gate, and the output layer V H (also when tied to the
// embedding: the product happens either way). Not in P: the embedding table (a lookup), the
// norm weights (RMSNorms, Qwen3's q/k norms, MLA's latent norms) and Qwen2's q/k/v biases.
//
// Attention core (no parameters): causal, so query i sees i + 1 keys and a sequence has
// ~S^2/2 (query, key) pairs, S/2 per token. Per pair and query head the forward does q.k
// (2 Dqk) and p.v (2 Dv); the backward twice that (dQ and dK: 2 Dqk each; dP and dV: 2 Dv
// each): 6 (S/2) Hq (Dqk + Dv) per token and layer. GQA: Dqk = Dv = head dim D, which gives the
// issue's 6 T L 2 (S/2) Hq D. MLA: Dqk = qk_head_dim + qk_pos_emb_head_dim (the nope + rope
// parts, 128 + 64 for DeepSeek-V3), Dv = v_head_dim (128). This is PaLM's model-FLOPs count
// (Chowdhery et al. 2022, app. B: 6 N + 12 L H Q S per token) with the attention term halved for
// the causal mask; FlashAttention's recomputation of q k^T in the backward, softmax, norms,
// rotary, SwiGLU, routing and the cross-entropy's softmax are not counted.
//
// MFU = model FLOP/s / 989e12 (dense bf16 peak of an H100 / H200 SXM); "vs GEMM" = model
// TFLOP/s / the measured 8192^3 bf16 GEMM rate of the same run. Times: DeviceTimer events
// around forward and backward of each timed step; the median step, split into its own forward
// and backward.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/nn/model_config.h"

namespace CLI {
class App;
}

namespace moe::bench {

struct ModelBenchOptions {
  // "zoo-name:layers" (or "zoo-name" for all layers). Empty: mixtral-8x7b:4 qwen3-30b-a3b:8 on
  // the GPU, qwen3-moe-tiny:2 on the CPU.
  std::vector<std::string> models;
  int64_t seq_length = 0;        // --seq-length; 0: 4096 on the GPU, 64 on the CPU
  int64_t micro_batch_size = 2;  // --micro-batch-size
  int warmup = 3;
  int iters = 10;
  uint64_t seed = 1234;  // parameters and token ids
  // --moe-router-force-load-balancing: every expert gets the same tokens (Megatron's benchmark
  // mode), instead of what the untrained router picks for random ids.
  bool force_balance = false;
  bool cpu = false;      // force the CPU even when a GPU is present
};

// Adds the `model` subcommand to `bench` (the `moe bench` app) with Megatron's flag names:
// --models, --seq-length, --micro-batch-size, --warmup, --iters, --seed, writing into `options`
// (which must outlive the parse). The caller sets options.cpu from the global --cpu flag.
CLI::App* add_model_bench_command(CLI::App& bench, ModelBenchOptions& options);

int run_model_bench(const ModelBenchOptions& options);

// "name:N" -> the zoo config cut to its first N layers (MTP dropped), named "name:N". Throws
// moe::Error for an unknown name, or N outside [1, the model's num_layers].
nn::ModelConfig bench_model_config(const std::string& spec);

// The model FLOPs of one forward + backward step (formula above).
struct StepFlops {
  int64_t matmul_params = 0;  // P: active matmul parameters
  double matmul = 0;          // 6 T P
  double attention = 0;       // 6 T L (S/2) Hq (Dqk + Dv)
  double total() const { return matmul + attention; }
};
StepFlops model_step_flops(const nn::ModelConfig& config, int64_t seq_length,
                           int64_t micro_batch_size);

}  // namespace moe::bench
