// Token permutation: from token order [T, H] with K routed slots per token to expert order
// (rows grouped by expert, tokens ascending within an expert: a stable sort by expert), and
// back. Also the capacity-factor dropping and the padding of per-expert row counts.
//
// A slot is (token t, choice j), flat index t * K + j. The permutation map, built once per
// forward on the device, holds both directions:
//   slot_to_row [T*K] i32: the permuted row of each slot, -1 if the slot was dropped
//   row_to_slot [R]   i32: the slot of each permuted row, -1 for padding rows
//   tokens_per_expert [E] i64: rows each expert receives, padding included
// R = num_rows is an upper bound known on the host without a device sync (T*K when nothing
// can be padded; E * capacity when padding to capacity; T*K + min(E, T*K)*(multiple-1) with
// the FP8 padding); rows past sum(tokens_per_expert) are padding too.
// Within an expert the kept slots come first (ascending slot index), then its padding rows.
//
// Memory-efficient permutation (docs/algorithms.md): probs travel with the rows and are
// applied after the activation, so unpermute is a plain sum over a token's slots.
#pragma once

#include <cstdint>
#include <span>

#include "moe/core/tensor.h"

namespace moe::ops {

struct PermuteMap {
  Tensor slot_to_row;        // [T*K] i32
  Tensor row_to_slot;        // [R] i32
  Tensor tokens_per_expert;  // [E] i64
  int64_t num_tokens = 0;    // T
  int64_t topk = 0;          // K
  int64_t num_rows = 0;      // R (host-known upper bound)
};

struct PermuteConfig {
  int64_t num_experts = 0;
  // Round each expert's row count up to a multiple of this (16 for FP8 grouped GEMMs,
  // `--moe-router-padding-for-fp8`); 1 = no padding.
  int64_t pad_multiple = 1;
  // > 0 with pad_to_capacity: every expert gets exactly `capacity` rows (drop-and-pad),
  // rounded up to pad_multiple; R = E * that. An expert's slots past `capacity` (in slot
  // order) are dropped, so drop by policy first (drop_over_capacity). Ignored otherwise.
  int64_t capacity = 0;
  bool pad_to_capacity = false;
};

// expert_ids [T, K] i32 (entries < 0 are dropped slots). Stable: within an expert, rows follow
// increasing slot index. Ids >= num_experts are an error on the CPU; the CUDA path cannot
// check them without a host sync and treats them as dropped. CUDA: no host sync, a counting
// sort (per-tile histograms, scans, a stable rank per tile; num_experts <= 8192).
PermuteMap make_permute_map(const Tensor& expert_ids, const PermuteConfig& config);

// x [T, H] (any dtype: rows are copied) -> x_perm [R, H]; probs [T, K] f32 (or f64) ->
// probs_perm [R] of probs' dtype (padding rows get 0 and zero rows). probs may be undefined
// (then probs_perm is undefined).
struct Permuted {
  Tensor x;
  Tensor probs;
};
Permuted permute_forward(const Tensor& x, const Tensor& probs, const PermuteMap& map);
// dx [T, H] = sum over a token's kept slots of d_x_perm rows (written, not accumulated; the
// sum runs in slot order, in fp32 for bf16/f16); d_probs [T, K] = d_probs_perm at each kept
// slot, 0 for dropped slots (undefined when d_probs_perm is). Gradient rule: both written.
struct PermuteGrads {
  Tensor x;
  Tensor probs;
};
PermuteGrads permute_backward(const Tensor& d_x_perm, const Tensor& d_probs_perm,
                              const PermuteMap& map);

// y [T, H] = sum over a token's kept slots of y_perm rows (probs were applied before); a
// token whose slots were all dropped gets zeros. Summed in slot order (fp32 for bf16/f16),
// a gather per token: deterministic, no atomics.
Tensor unpermute_forward(const Tensor& y_perm, const PermuteMap& map);
// d_y_perm [R, H]: each kept slot's row gets its token's d_y; padding rows get 0 (written).
Tensor unpermute_backward(const Tensor& d_y, const PermuteMap& map);

// Capacity (docs/algorithms.md "Capacity and dropping"): capacity = ceil(K * T / E * factor),
// evaluated in double in that order, as Megatron's get_capacity does.
int64_t expert_capacity(int64_t num_tokens, int64_t topk, int64_t num_experts, double factor);

enum class DropPolicy { probs, position };
// Returns expert_ids [T, K] i32 with the slots that exceed their expert's capacity set to -1.
// policy probs: each expert keeps the `capacity` slots with the highest prob (ties: lower slot
// index first); position: the first `capacity` slots in slot order. probs [T, K] f32/f64 (only
// read by policy probs; may be undefined for position). Slots already < 0 stay -1; ids >=
// num_experts are an error on the CPU and dropped on CUDA. CUDA: no host sync (a stable radix
// sort by prob, then the map's stable per-expert rank).
Tensor drop_over_capacity(const Tensor& expert_ids, const Tensor& probs, int64_t num_experts,
                          int64_t capacity, DropPolicy policy);

// Chunk reordering for the alltoall dispatcher ("permute 2"): x holds n chunks of rows with
// sizes chunk_sizes [n] (host); output chunk i is input chunk order[i]. Its inverse is the
// same call with the inverse order and the reordered sizes. x: any dtype, dim >= 1 (rows
// along dim 0, e.g. tokens [N, H] or probs [N]); sum(chunk_sizes) must equal x.size(0).
Tensor sort_chunks(const Tensor& x, std::span<const int64_t> chunk_sizes,
                   std::span<const int64_t> order);

}  // namespace moe::ops
