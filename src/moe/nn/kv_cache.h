// A key/value cache for generation: decode one token at a time (or a prompt at once) reusing
// each sequence's keys and values instead of recomputing the whole window.
//
// What is cached: per sequence and decoder layer, the attention op's keys and values exactly
// as the training forward gives them to ops::attention_forward: GQA's k (normed, rotated) and
// v, [n, 1, Hkv, D]; MLA's per-head keys [k_nope | rotary(k_pe)] and values, [n, 1, Hq, dn + dr]
// and [n, 1, Hq, dv] (after kv_b_proj: simpler than DeepSeek's compressed-latent cache
// [c_kv | k_pe], which would need attention in the latent space, and Hq (2 dn + dr + dv) /
// (kvl + dr) times larger for DeepSeek-V3: 128 x 448 / 576 ~ 100x; fine for the models that
// run on one device here).
//
// A step takes new tokens x [S, B, H] with S == 1 (a decode step: one new token for each of B
// sequences, each at its own position) or B == 1 (a prefill: one sequence's S new tokens).
// Projections, norms, MLPs and MoE layers run only on the new tokens (batched across the B
// sequences). Attention runs per sequence over its n = cached + S keys through the same op as
// training (ops::attention_forward, causal): the op needs as many query rows as keys, so the
// new queries take the last S rows of a zero [n] query block and only those output rows are
// kept. That costs O(n^2) attention per step (negligible next to the projections and experts
// for prompts of a few thousand tokens; a dedicated decode kernel would make it O(n)), and
// keeps the numbers those of the training forward. Rotary positions are each sequence's
// cached length + s, as the forward's s.
//
// Nothing here changes the training forward: these are separate entry points.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/core/tensor.h"
#include "moe/ops/attention.h"

namespace moe::nn {

class GPTModel;

// One decoder layer's keys and values of one sequence: [capacity, 1, heads, Dk] and
// [capacity, 1, heads, Dv], the first `SequenceKvCache::length` rows filled.
struct KvBlock {
  Tensor k, v;
};

// One sequence's cache: `length` tokens (positions 0..length-1) in every decoder layer.
struct SequenceKvCache {
  int64_t length = 0;
  std::vector<KvBlock> layers;  // one per decoder layer, allocated by the first step
};

// The sequences of one step, as the attention blocks see them.
struct KvStep {
  std::vector<SequenceKvCache*> caches;  // B, one per column of x [S, B, H]
  int64_t new_tokens = 0;                // S
  Tensor positions;                      // [S, B] i64 on the model's device: length_b + s
  int64_t layer = 0;                     // the decoder layer being run
};

// Appends the new keys k [S, B, Hkv, Dk] and values v [S, B, Hkv, Dv] to each sequence's cache
// of step.layer (growing it as needed) and returns the causal attention of the new queries
// q [S, B, Hq, Dk] over the whole cache: [S, B, Hq, Dv]. The caches' lengths are not advanced
// (decode_step does that after the last layer).
Tensor cached_attention(const Tensor& q, const Tensor& k, const Tensor& v, KvStep& step,
                        const ops::AttentionOptions& options);

// One step of the model on new tokens `input_ids` [S, B] (i64; S == 1 or B == 1, see above)
// continuing `caches` (B of them; an empty cache starts a sequence): the logits of each
// sequence's last new token, [B, V] on the model's device. Advances every cache by S. The
// sequences' lengths after the step must stay within max_position_embeddings.
Tensor decode_step(GPTModel& model, const Tensor& input_ids,
                   const std::vector<SequenceKvCache*>& caches);

}  // namespace moe::nn
