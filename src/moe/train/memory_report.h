// The start-up memory report of a run on several ranks: what each rank holds for the model's
// parameters, their gradients and the optimizer's state, an estimate of one micro-batch's
// activations, and, after the first iteration, the measured peak, gathered to rank 0, which
// prints one line per rank:
//
//   memory per rank (MiB): parameters | gradients (fp32 main) | optimizer state (masters +
//   moments) | activations of one micro-batch (estimate)
//     rank 0:       1.92 |       1.92 |       1.92 |       0.63
//     rank 1:       1.92 |       1.92 |       1.92 |       0.63
//   peak memory after iteration 1 (MiB, process peak RSS): rank 0 412.3, rank 1 410.8
//
// What each figure counts, for this rank:
//   parameters  the bytes of the parameter values it holds: the data-parallel buffers
//               (param_buffer.h; alignment and padding included) when it has them, else every
//               parameter's value (its expert shard under EP x ETP, its block of a TP-split
//               tensor under TP: 1 / TP of those, the replicated ones whole)
//   gradients   the same for the fp32 main gradients (grad buffers, else Parameter::grad)
//   optimizer   AdamW: the bytes of its state() tensors (the moments, and the fp32 masters of
//               16-bit models) of the parameters it holds; the distributed optimizer:
//               state_bytes(), its shard of them, which falls as 1 / (data-parallel group size)
//   activations activation_bytes_estimate (below): what the forward of one micro-batch keeps
//               for its backward on this rank (no recomputation), from the shapes alone
//   peak        on a GPU the caching allocator's peak of memory held by tensors
//               (core/allocator.h memory_stats); on the CPU the process's peak resident set
//               (VmHWM of /proc/self/status; getrusage's ru_maxrss where that is missing), which
//               covers every rank of the process when ranks are threads
//
// The activation estimate follows Korthikanti et al. 2022 ("Reducing Activation Recomputation
// in Large Transformer Models", section 4), which counts per layer, for s tokens of b sequences
// of width h, a heads and TP size t, in 16-bit activations with 1-byte dropout masks:
//   s b h (34 + 5 a s / h)                             bytes on one rank,
//   s b h (10 + 24 / t + 5 a s / (h t))                under TP,
//   s b h (34 / t + 5 a s / (h t))                     under TP with sequence parallelism:
// 24 s b h are inside attention and the MLP (q, k, v, the attention output, the MLP's hidden
// activations: split by heads or width), 10 s b h between them (the two norms' inputs 4, the
// inputs of attention and of the MLP 4, two dropout masks 2: sequence shards under sequence
// parallelism), and 5 a s^2 b the attention scores. This codebase keeps less and other things:
//   - no attention scores (ops/attention.h keeps the log-sum-exp only, as FlashAttention),
//   - no dropout masks (ops/dropout.h regenerates them in the backward),
//   - SwiGLU MLPs of width F (fc1's output 2F and the activation F), grouped-query heads, MLA's
//     latents, and MoE layers on this rank's sequence shard (tensor_parallel.h).
// So, in elements per token of the sequence (E bytes each: the model's dtype), per layer
//   between   2 h + h + h             the norms' inputs, the inputs of attention and of the dense
//                                     MLP or shared expert (none for an MoE layer without one):
//                                     / t under sequence parallelism, as Megatron keeps them
//                                     (the backward gathers them again: tensor_parallel.h)
//   gathered  MLA's replicated latents q_lora_rank + kv_lora_rank (twice with --qk-layernorm:
//             the latent norms' inputs), on every token of the sequence on every TP rank
//   split     attention: GQA 2 (Hq + Hkv) D (q, k, v, output; + (Hq + Hkv) D with QK-norm: the
//                        norms' inputs), MLA Hq (2 (dn + dr) + 2 dv);
//             dense MLP: 3 F;  MoE layer: h (the router's input) + k ETP h (the rows the
//             experts receive: top-k copies, gathered over ETP) + 3 k F_expert + 3 F_shared
//             (all / t: heads and widths split over TP, the MoE layer on the sequence shard)
//   bytes = s b E (sum over layers of (between / t_sp + gathered + split / t) + 2 h / t_sp)
// with t_sp = t under sequence parallelism, else 1; the last term is the final norm's input and
// the output layer's input. An MTP depth is a layer of the last layer's kind with 6 h more
// between (enorm's and hnorm's inputs, eh_proj's input 2 h, its final norm's input, the output
// layer's input). Left out: the attention's log-sum-exp, the router's logits and the
// dispatchers' buffers, and the transient buffers of a backward. For the paper's layer
// (Hkv = Hq, Hq D = h, 3 F = 8 h, E = 2) this gives s b h (8 / t_sp + 24 / t) bytes: the
// paper's 24 / t, and its 10 less the 2 of dropout masks, all / t under sequence parallelism
// (the paper's 34 / t less the masks). Under context parallelism c a rank holds s / c tokens
// of every sequence: s b E (per-token sum) / c; with --cp-comm-type all_gather its attention
// keeps the gathered keys and values of the whole sequence too (context_parallel.h), s b E (sum
// over layers of keys_values / t) more (the ring keeps only its own).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/device.h"
#include "moe/dist/process_group.h"
#include "moe/nn/gpt_model.h"
#include "moe/train/trainer.h"

namespace moe::train {

struct RankMemory {
  int64_t parameter_bytes = 0;
  int64_t gradient_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t activation_bytes = 0;  // one micro-batch's, estimated (activation_bytes_estimate)
  int64_t peak_bytes = 0;        // 0 until measured (measure_peak_memory)
};

// What the activation estimate needs besides the model's config.
struct ActivationShape {
  int64_t micro_batch_size = 1;
  int64_t seq_length = 1;
  DType dtype = DType::bf16;  // the activations' (the model's) dtype
  int tensor_parallel = 1;    // t
  bool sequence_parallel = false;
  int context_parallel = 1;          // c: each rank holds s / c of every sequence
  bool gathers_keys_values = false;  // --cp-comm-type all_gather: the whole sequence's kept
};

// One layer's activations per token of the sequence, in elements (see above).
struct LayerActivations {
  double between = 0;   // / t under sequence parallelism
  double gathered = 0;  // whole on every TP rank
  double split = 0;     // / t
  // Of split: the attention's keys and values (GQA 2 Hkv D, MLA Hq (dn + dr + dv)), which
  // context parallelism also keeps for the whole sequence (gathered from the CP group).
  double keys_values = 0;
};
// Layer `layer` of `config` (config.moe's expert_tensor_parallel_size included); layers past
// num_layers are MTP depths (the last layer's kind, with the MTP module's own norms).
LayerActivations layer_activations(const nn::ModelConfig& config, int64_t layer);

// The bytes one micro-batch's forward keeps on one rank for its backward (see above).
int64_t activation_bytes_estimate(const nn::ModelConfig& config, const ActivationShape& shape);

// This rank's holdings (peak_bytes left 0); the activation estimate for the trainer's
// micro-batch size and sequence length and the model's TP group.
RankMemory rank_memory(nn::GPTModel& model, Trainer& trainer);

// The measured peak of this rank on `device` (see above).
int64_t measure_peak_memory(Device device);

// Every rank's figures in rank order, on every rank: an all_gather over `world` of a small
// tensor on `device` (the world's backend must take it: a GPU with NCCL). Collective: every
// member calls it. Null world: {mine}.
std::vector<RankMemory> gather_rank_memory(const RankMemory& mine,
                                           const std::shared_ptr<dist::ProcessGroup>& world,
                                           Device device);

// The lines of the report (above): the holdings of every rank, and the peaks after
// `iteration` (the second form; peak_bytes of every rank).
std::string format_memory_report(const std::vector<RankMemory>& ranks);
std::string format_peak_memory(const std::vector<RankMemory>& ranks, int64_t iteration,
                               Device device);

}  // namespace moe::train
