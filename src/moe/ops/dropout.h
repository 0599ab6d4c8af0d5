// Dropout with counter-based masks (Megatron's --hidden-dropout and --attention-dropout): the
// mask of an element is a pure function of (seed, layer, site, the element's GLOBAL index), so
// it does not depend on the device, the kernel's thread layout or the parallel mapping (how the
// global batch is split over data-parallel ranks and micro-batches), and the backward
// regenerates it instead of storing it.
//
// Formula. key = philox4x32_10(seed, (layer + 1) * 2^8 + site) words 0, 1 (a 64-bit Philox key
// per (seed, layer, site); layer -1 is the decoder's embedding); for global element index n:
//   bits = philox4x32_10(key, n >> 2).v[n & 3],   u = ((bits >> 8) + 0.5) 2^-24 in (0, 1)
//   keep = u >= p (p rounded to f32),   y = keep ? x * 1 / (1 - p) : 0
// computed in the compute type (f32 for bf16/f16/f32, f64 for f64), 1 / (1 - p) rounded to that
// type on the host. p = 1 drops everything (y = 0, as torch's dropout); p = 0 is the identity
// and launches nothing. The backward is the same map applied to dy (dL/dx = keep / (1 - p) dy).
//
// Global indices. A token tensor x [S, B, F] (Megatron's [sequence, batch, feature] order) of a
// micro-batch whose sample b is sample `first_sample + b` of the training stream (the data
// position Megatron's sampler assigns: the same whichever rank / micro-batch holds it):
//   n = ((first_sample + b) * S_total + seq_offset + s) * F + f
// where the tensor holds positions [seq_offset, seq_offset + S) of a sequence of S_total
// (seq_total; 0 means S_total = S, seq_offset = 0: the tensor is the whole sequence, as on one
// rank; under sequence parallelism a rank holds such a block). Attention probabilities
// P [B, Hq, Sq, Sk] (query i, key j; ops/attention.h) of heads [head_offset, head_offset + Hq) of
// Hq_total (heads_total; 0 means Hq), queries at positions [query_offset, query_offset + Sq) and
// keys at [key_offset, key_offset + Sk) of a sequence of S_total (seq_total; 0 means
// max(Sq, Sk)):
//   n = (((first_sample + b) * Hq_total + head_offset + h) * S_total + query_offset + i)
//         * S_total + key_offset + j
// So sample, head, position and feature are global indices: tensor parallelism (a block of
// heads), sequence parallelism (a block of positions) and context parallelism (query and key
// chunks) draw the one-rank model's masks bit for bit. Token tensors leave the attention fields
// at 0 and attention leaves seq_offset at 0 (the calls check it). The training stream's sample
// index makes the "per-call counter": it differs for every micro-batch of a run and is restored
// with the data position by a checkpoint, so nothing else needs saving. Indices are 64-bit:
// (samples * Hq * S^2) stays below 2^64 for ~10^9 samples of S = 4096 with 64 heads.
#pragma once

#include <cstdint>

#include "moe/core/host_device.h"
#include "moe/core/rng.h"
#include "moe/core/tensor.h"

namespace moe::ops {

// Where a dropout sits in a layer (part of the key, so two sites never share masks).
enum class DropoutSite : uint32_t {
  embedding = 0,         // the embedding output (Megatron's embedding_dropout: hidden_dropout)
  attention_probs = 1,   // the softmax output inside core attention (attention_dropout)
  attention_output = 2,  // after the attention output projection, before the residual add
  mlp_output = 3,        // after the MLP / MoE block, before the residual add
};

// One dropout call: the drop probability, the key, the micro-batch's first global sample and
// where the local tensor sits in the global one (the defaults: it is the whole thing).
struct DropoutArgs {
  double p = 0.0;            // in [0, 1]; 0: the identity
  uint64_t key = 0;          // dropout_key(seed, layer, site)
  int64_t first_sample = 0;  // the global index of sample b = 0 (>= 0)
  // Token tensors [S, B, F] (and the i, j of attention probabilities): the global sequence
  // length (0: the tensor's S) and, for token tensors, the global position of s = 0.
  int64_t seq_offset = 0;
  int64_t seq_total = 0;
  // Attention probabilities [B, Hq, Sq, Sk]: the global index of local head 0 and the global
  // number of query heads (0: the tensor's Hq); the global positions of query i = 0 and key
  // j = 0 (context parallelism's chunks).
  int64_t head_offset = 0;
  int64_t heads_total = 0;
  int64_t query_offset = 0;
  int64_t key_offset = 0;
  bool active() const { return p > 0.0; }
  // S_total for a local sequence of `seq` positions, Hq_total for `heads` local heads.
  int64_t global_seq(int64_t seq) const { return seq_total > 0 ? seq_total : seq; }
  int64_t global_heads(int64_t heads) const { return heads_total > 0 ? heads_total : heads; }
};

// The Philox key of (seed, layer, site); layer may be -1 (the embedding of the decoder).
inline uint64_t dropout_key(uint64_t seed, int64_t layer, DropoutSite site) {
  const uint64_t counter = (static_cast<uint64_t>(layer + 1) << 8) | static_cast<uint64_t>(site);
  const Philox4 r = philox4x32_10(seed, counter);
  return (static_cast<uint64_t>(r.v[1]) << 32) | r.v[0];
}

// Whether element n of the draw `key` survives a drop probability p (p as f32).
MOE_HD bool dropout_keep(uint64_t key, uint64_t n, float p) {
  const Philox4 r = philox4x32_10(key, n >> 2);
  return bits_to_unit_float(r.v[n & 3]) >= p;
}

// The global index n of token element (s, b, f) and of attention probability (b, h, i, j), the
// formulas above, from the local indices and the geometry of `args` (CPU and CUDA alike).
MOE_HD uint64_t dropout_token_index(int64_t first_sample, int64_t seq_offset, uint64_t seq_total,
                                    uint64_t features, int64_t b, int64_t s, int64_t f) {
  return (static_cast<uint64_t>(first_sample + b) * seq_total +
          static_cast<uint64_t>(seq_offset + s)) *
             features +
         static_cast<uint64_t>(f);
}
MOE_HD uint64_t dropout_probs_index(int64_t first_sample, int64_t head_offset, uint64_t heads_total,
                                    int64_t query_offset, int64_t key_offset, uint64_t seq_total,
                                    int64_t b, int64_t h, int64_t i, int64_t j) {
  return ((static_cast<uint64_t>(first_sample + b) * heads_total +
           static_cast<uint64_t>(head_offset + h)) *
              seq_total +
          static_cast<uint64_t>(query_offset + i)) *
             seq_total +
         static_cast<uint64_t>(key_offset + j);
}

// Checks p in [0, 1] (finite); `what` names the flag or field in the message.
void check_dropout_probability(double p, const char* what);
// Checks the args of a token tensor with `seq` local positions: p, first_sample >= 0,
// 0 <= seq_offset, seq_offset + seq <= S_total, and the attention-only fields unset. `op`
// names the call in the message.
void check_token_dropout(const DropoutArgs& args, int64_t seq, const char* op);
// Checks the args of attention probabilities with `heads` local query heads, `query_seq` local
// query and `key_seq` local key positions: p, first_sample >= 0, 0 <= head_offset,
// head_offset + heads <= Hq_total, 0 <= query_offset, query_offset + query_seq <= S_total,
// 0 <= key_offset, key_offset + key_seq <= S_total (S_total: seq_total, or 0 for
// max(query_seq, key_seq)), seq_offset unset.
void check_probs_dropout(const DropoutArgs& args, int64_t heads, int64_t query_seq, int64_t key_seq,
                         const char* op);
// The same with as many queries as keys (self-attention of `seq` positions).
inline void check_probs_dropout(const DropoutArgs& args, int64_t heads, int64_t seq,
                                const char* op) {
  check_probs_dropout(args, heads, seq, seq, op);
}

// y = dropout(x) for x [S, B, F] (f64, f32, bf16, f16; contiguous). p = 0 returns x itself
// (shared storage, nothing runs); otherwise a new tensor.
Tensor dropout(const Tensor& x, const DropoutArgs& args);
// In place: x = dropout(x). p = 0 does nothing.
void dropout_(Tensor& x, const DropoutArgs& args);
// The backward: dL/dx = dropout(dy) with the forward's args (the same mask and scale).
inline Tensor dropout_backward(const Tensor& dy, const DropoutArgs& args) {
  return dropout(dy, args);
}
// The keep mask of an [S, B, F] tensor as u8 (1 = kept) on `device`: for tests and checks.
Tensor dropout_mask(const Shape& shape, const DropoutArgs& args, Device device);

}  // namespace moe::ops
