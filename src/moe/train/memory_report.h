// The start-up memory report of a run on several ranks: what each rank holds for the model's
// parameters, their gradients and the optimizer's state, an estimate of one micro-batch's
// activations (under pipeline parallelism: of the micro-batches in flight at the peak of its
// schedule), and, after the first iteration, the measured peak, gathered to rank 0, which
// prints one line per rank:
//
//   memory per rank (MiB): parameters | gradients (fp32 main) | optimizer state (masters +
//   moments) | activations of one micro-batch (estimate)
//     rank 0:       1.92 |       1.92 |       1.92 |       0.63
//     rank 1:       1.92 |       1.92 |       1.92 |       0.63
//   peak memory after iteration 1 (MiB, process peak RSS): rank 0 412.3, rank 1 410.8
//
// and under pipeline parallelism (here PP 2, 1F1B, 4 micro-batches)
//
//   memory per rank (MiB): parameters | gradients (fp32 main) | optimizer state (masters +
//   moments) | activations in flight (estimate: peak of the pipeline schedule, (micro-batch,
//   chunk) pairs held)
//     rank 0:       1.10 |       1.10 |       1.10 |       0.58 (2 in flight)
//     rank 1:       1.02 |       1.02 |       1.02 |       0.36 (1 in flight)
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
//               for its backward on this rank (no recomputation), from the shapes alone; under
//               pipeline parallelism the peak over this rank's schedule of what its micro-batches
//               in flight keep (below)
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
//
// Pipeline parallelism (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training
// on GPU Clusters"; Korthikanti et al. 2022, section 4.2.3). A pipeline rank holds only its
// chunks (nn::PipelineStage), so one micro-batch's forward of chunk c keeps the sum above over
// that chunk's decoder layers and MTP layers only, and the 2 h / t_sp of the final norm's and
// the output layer's inputs only when the chunk holds the loss (stage_activation_bytes; the
// embedding keeps nothing counted: its output is the first layer's input, counted there; a
// chunk's output is freed once sent: trainer_pipeline.cpp). The schedule then keeps several
// micro-batches of each chunk at once: a (micro-batch, chunk) pair is in flight from the end of
// its forward to its backward. The estimate walks this rank's action list, the one the trainer
// runs (pipeline_schedule(PP, rank, M, chunks)), and takes the MAXIMUM OVER MOMENTS (after each
// forward: only forwards add) OF THE SUM over chunks of (pairs of that chunk held) x (that
// chunk's bytes of one micro-batch) (in_flight_activations): not the sum of each chunk's own
// maximum, which can come at different moments. For Megatron's 1F1B, stage p of PP holds
// min(PP - p, M) micro-batches at its peak (the first stage PP, the last 1); the interleaved
// schedule's rank r holds min(M v, 2 (PP - r - 1) + (v - 1) G + 1) pairs of its v chunks
// (pipeline_schedule.h's warm-up, plus the steady state's forward): on the first stage
// PP v + PP - 1 (G = PP), Megatron's PP micro-batches times its interleaving penalty
// 1 + (PP - 1) / (PP v). Without pipeline parallelism the list alternates forward and backward:
// one micro-batch, the figure above unchanged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/core/device.h"
#include "moe/dist/process_group.h"
#include "moe/nn/gpt_model.h"
#include "moe/nn/pipeline_layout.h"
#include "moe/nn/recompute.h"
#include "moe/train/pipeline_schedule.h"
#include "moe/train/trainer.h"

namespace moe::train {

struct RankMemory {
  int64_t parameter_bytes = 0;
  int64_t gradient_bytes = 0;
  int64_t optimizer_bytes = 0;
  // Estimated: one micro-batch's (activation_bytes_estimate); under pipeline parallelism the
  // peak of this rank's micro-batches in flight (in_flight_activations).
  int64_t activation_bytes = 0;
  int64_t peak_bytes = 0;     // 0 until measured (measure_peak_memory)
  int64_t pipeline_size = 1;  // PP: the report says "in flight" when > 1
  // The (micro-batch, chunk) pairs whose activations activation_bytes counts (1 without PP).
  int64_t in_flight = 1;
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
  // Activation recomputation (nn/recompute.h): full keeps a unit's input alone (h / t_sp a
  // token, on its first layer) and nothing of its layers; selective drops the recomputed
  // blocks' split part (block_split, or shared_split), keeping the block's input h / t_sp.
  // What a backward recomputes is transient (one unit, or one block, at a time): not counted.
  nn::RecomputeConfig recompute;
};

// One layer's activations per token of the sequence, in elements (see above).
struct LayerActivations {
  double between = 0;   // / t under sequence parallelism
  double gathered = 0;  // whole on every TP rank
  double split = 0;     // / t
  // Of split: the attention's keys and values (GQA 2 Hkv D, MLA Hq (dn + dr + dv)), which
  // context parallelism also keeps for the whole sequence (gathered from the CP group).
  double keys_values = 0;
  // Of split: the MLP block's own (dense MLP 3 F; MoE h + k ETP h + 3 k F_expert + 3 F_shared),
  // and of that the shared expert's 3 F_shared; and whether `between` counts the block's input
  // (the dense MLP's or shared expert's h): what selective recomputation drops and keeps.
  double block_split = 0;
  double shared_split = 0;
  bool block_input_counted = false;
};
// Layer `layer` of `config` (config.moe's expert_tensor_parallel_size included); layers past
// num_layers are MTP depths (the last layer's kind, with the MTP module's own norms).
LayerActivations layer_activations(const nn::ModelConfig& config, int64_t layer);

// The bytes one micro-batch's forward keeps on one rank for its backward (see above).
int64_t activation_bytes_estimate(const nn::ModelConfig& config, const ActivationShape& shape);

// The same for one pipeline stage (a chunk): its decoder and MTP layers, and the final norm's
// and output layer's inputs when it holds the loss. The whole model's stage gives
// activation_bytes_estimate.
int64_t stage_activation_bytes(const nn::ModelConfig& config, const nn::PipelineStage& stage,
                               const ActivationShape& shape);

// The peak over a rank's action list of the activations its (micro-batch, chunk) pairs in flight
// keep (forwarded, not yet backwarded): the maximum over moments of sum over chunks c of
// held(c) x chunk_bytes[c] (see above), at the first moment it is reached (of equal bytes, the
// moment of the most pairs).
struct InFlightActivations {
  int64_t bytes = 0;               // the peak
  int64_t pairs = 0;               // the pairs held then
  std::vector<int64_t> per_chunk;  // of them, those of each chunk
};
// chunk_bytes: one micro-batch's bytes of each chunk (index = chunk); all 1 gives the peak
// count of pairs. Throws moe::Error on an action naming a chunk past chunk_bytes, or a backward
// of a pair not in flight.
InFlightActivations in_flight_activations(const std::vector<PipelineAction>& actions,
                                          const std::vector<int64_t>& chunk_bytes);

// This rank's holdings (peak_bytes left 0); the activation estimate for the trainer's
// micro-batch size and sequence length and the model's TP group, of the model's chunks over the
// schedule the trainer runs (its micro-batches per step, its parallel state's PP size and rank).
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
