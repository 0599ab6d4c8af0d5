// The a2a exchange of context-parallel attention (context_parallel.h; Megatron's
// --cp-comm-type a2a, DeepSpeed-Ulysses): two all-to-alls over the CP group trade the sequence
// split for a head split, so each rank runs ordinary causal attention over the whole sequence
// for H / CP of its heads, and a third trades the output back.
//
//   q [2c, B, Hq, D], k [2c, B, Hkv, D], v [2c, B, Hkv, Dv]   this rank's rows, all its heads
//     -> all-to-all: rank j receives every rank's rows of heads [j H / CP, (j + 1) H / CP),
//        put in position order (the load-balanced chunks undone)
//     -> q', k', v' [S, B, H / CP, .]: attention over the whole sequence
//     -> out' [S, B, Hq / CP, Dv] -> all-to-all back -> out [2c, B, Hq, Dv]
// The backward sends d out the same way, runs the attention backward on the saved q', k', v',
// out', and trades dq', dk', dv' back. Query head i of rank j's block keeps its key/value head
// (i / (Hq / Hkv)) because both head counts split into whole blocks: Hq and Hkv must divide by
// CP. Activations per rank stay those of 2c rows; the messages are q, k, v and out once each.
#pragma once

#include "moe/nn/context_parallel.h"

namespace moe::nn {

// Whether heads of `query_heads` queries and `kv_heads` keys/values (this TP rank's) split over
// CP's ranks for the a2a exchange; throws naming the counts otherwise.
void check_a2a_heads(int64_t query_heads, int64_t kv_heads, int cp_size);

ContextParallelAttention a2a_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                               const ops::AttentionOptions& options,
                                               const ContextParallel& cp);
ops::AttentionGrads a2a_attention_backward(const Tensor& d_out, const Tensor& q,
                                           const ContextParallelAttention& saved,
                                           const ops::AttentionOptions& options,
                                           const ContextParallel& cp);

}  // namespace moe::nn
