// Context parallelism (Megatron's --context-parallel-size; docs/distributed-training.md "Context
// parallelism"): the sequence of every micro-batch is split over the CP ranks, so activations
// and attention compute per rank fall by CP for long contexts.
//
// Load-balanced split (Megatron's get_batch_on_this_cp_rank): the S positions are cut into
// 2 CP chunks of c = S / (2 CP); CP rank r holds chunks r and 2 CP - 1 - r, in that order, as
// its 2c rows. Under causal attention the early chunk has little to attend to and the late one
// much, so every rank does the same work.
//
// Everything but attention is per token: embeddings, norms, MLPs, MoE layers and the loss run
// on the rank's rows (rotary embeddings at the rows' global positions). Attention exchanges keys
// and values in one of three ways (Megatron's --cp-comm-type):
//   all_gather  the keys and values of the whole sequence are gathered from the CP group; each
//               local query chunk runs against the keys up to its end with the causal mask offset
//               to its global position; the backward reduce-scatters the keys' and values'
//               gradients back to their ranks. Keeps the whole sequence's keys and values.
//   p2p         a ring (ring attention; Megatron / Transformer Engine's default): in step i a rank
//               holds the keys and values of rank r - i, sends them on to rank r + 1 while it
//               computes with them, and merges each (query chunk, key chunk) block's partial
//               result by its log-sum-exp (ops/attention_merge.h); a query chunk sees a key
//               chunk wholly when the key chunk comes earlier, causally when it is its own, not
//               at all when later. The backward runs the ring again, the keys and values
//               travelling ahead and the sums of their gradients one step behind them, both
//               while the step's blocks compute; the sums end on their rank. Keeps this rank's
//               keys and values only.
//   a2a         all-to-alls trade the sequence split for a head split (DeepSpeed-Ulysses;
//               context_parallel_a2a.h): each rank attends over the whole sequence with H / CP
//               of the heads. Needs the query and key/value head counts to divide by CP.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "moe/dist/process_group.h"
#include "moe/ops/attention.h"

namespace moe::nn {

struct ContextParallel {
  enum class Exchange { all_gather, p2p, a2a };
  std::shared_ptr<dist::ProcessGroup> group;  // the CP group; null: this rank alone
  Exchange exchange = Exchange::p2p;          // --cp-comm-type

  int size() const { return group ? group->size() : 1; }
  int rank() const { return group ? group->rank() : 0; }
  bool active() const { return size() > 1; }
  // c = S / (2 CP) (throws unless 2 CP divides S).
  int64_t chunk(int64_t seq_length) const;
  // The global positions where this rank's two chunks start: {r c, (2 CP - 1 - r) c}.
  std::array<int64_t, 2> chunk_starts(int64_t seq_length) const;
};

// Every rank's rows concatenated rank after rank [S, ...] (as an all-gather leaves them: rank
// r's first c rows are chunk r, its last c rows chunk 2 CP - 1 - r) -> the whole sequence in
// position order [S, ...], and back.
void ranks_to_positions(const Tensor& by_rank, Tensor& by_position, int cp_size);
void positions_to_ranks(const Tensor& by_position, Tensor& by_rank, int cp_size);
// This rank's rows of a tensor whose dim 0 is the whole sequence [S, ...]: its two chunks,
// concatenated [2c, ...]. The tensor itself without CP.
Tensor context_parallel_rows(const Tensor& whole, const ContextParallel& cp);
// The whole sequence [S, ...] in position order from every rank's rows [2c, ...] (all-gather);
// the tensor itself without CP.
Tensor context_parallel_gather(const Tensor& mine, const ContextParallel& cp);
// The global positions [2c, B] (i64, on `device`) of this rank's rows of sequences of S; undefined
// without CP (positions are then the row index).
Tensor context_parallel_positions(int64_t seq_length, int64_t batch, const ContextParallel& cp,
                                  Device device);
// Those positions for a module's forwards, made once per (rows, B, device): rows = 2c.
class ContextParallelPositions {
 public:
  Tensor get(int64_t local_rows, int64_t batch, const ContextParallel& cp, Device device);

 private:
  Tensor positions_;
};

// Attention of this rank's queries q [2c, B, Hq, D] (sbhd) over the keys and values of the whole
// sequence, gathered from the CP group; k [2c, B, Hkv, D], v [2c, B, Hkv, Dv] are this rank's.
// options: causal sbhd attention (its dropout's offsets are set here per chunk).
struct ContextParallelAttention {
  Tensor out;                 // [2c, B, Hq, Dv]
  Tensor k_all, v_all;        // all_gather: [S, B, Hkv, .] in global order, for the backward;
                              // a2a: [S, B, Hkv / CP, .], this rank's heads
  Tensor q_all, out_all;      // a2a: [S, B, Hq / CP, .] the whole sequence's q and out
  Tensor lse_all;             // a2a: [B, Hq / CP, S]
  Tensor k, v;                // p2p: this rank's [2c, B, Hkv, .], for the backward
  std::array<Tensor, 2> lse;  // per query chunk [B, Hq, c]
};
ContextParallelAttention context_parallel_attention_forward(const Tensor& q, const Tensor& k,
                                                            const Tensor& v,
                                                            const ops::AttentionOptions& options,
                                                            const ContextParallel& cp);
// dq, and this rank's dk, dv (the sums of every rank's contributions to its keys).
ops::AttentionGrads context_parallel_attention_backward(const Tensor& d_out, const Tensor& q,
                                                        const ContextParallelAttention& saved,
                                                        const ops::AttentionOptions& options,
                                                        const ContextParallel& cp);

// A block's core attention over its rows: ops::attention_forward on one rank, or under CP the
// above (saved then holds the gathered keys and values; lse stays undefined).
ops::AttentionOutput sequence_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                const ops::AttentionOptions& options,
                                                const ContextParallel& cp,
                                                ContextParallelAttention& saved);
// Its backward, from the forward's q, k, v, out, lse and saved.
ops::AttentionGrads sequence_attention_backward(const Tensor& d_out, const Tensor& q,
                                                const Tensor& k, const Tensor& v, const Tensor& out,
                                                const Tensor& lse,
                                                const ContextParallelAttention& saved,
                                                const ops::AttentionOptions& options,
                                                const ContextParallel& cp);

}  // namespace moe::nn
