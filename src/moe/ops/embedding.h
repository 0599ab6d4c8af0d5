// Token embedding lookup, whole or vocab-parallel (Megatron's VocabParallelEmbedding).
//
//   ids [...] (i32 or i64), weight [V_local, H] holding global ids [vocab_start, vocab_end),
//   vocab_end = vocab_start + V_local
//   y[..., :] = weight[ids[...] - vocab_start]  if vocab_start <= ids[...] < vocab_end
//             = 0                                otherwise (another shard's id: the zero row that
//                                                 the tensor-parallel all-reduce then fills in)
//   backward: dW[v] (+)= sum over tokens t with ids[t] - vocab_start == v of dy[t]
// Gradient rule: dW (a parameter gradient) is accumulated when `accumulate` is set, else written
// (rows no token chose become zero). There is no activation gradient (ids are integers).
//
// Range: every id must lie in [0, vocab_size) (the global vocabulary; default vocab_end, i.e. an
// unsharded table). On the CPU an id outside it throws moe::Error naming the token and the id.
// On CUDA the op does not synchronise to check: an out-of-range id gives a zero row (forward)
// and no gradient (backward); the forward adds the number of such ids to `invalid_count` when
// given (an i32 [1] tensor on the ids' device, read by the caller at its next sync point, e.g.
// with the loss), and prints one device-side message per process (printf, visible at the next
// synchronisation). check_token_ids() is the synchronising check for data pipelines and tests.
//
// dtypes: weight and y share one of f64, f32, bf16, f16 (a copy: no arithmetic in the forward).
// dW is f32 for bf16/f16 weights (fp32 main gradients), else weight's dtype; the backward sums in
// dW's dtype.
// CUDA backward is deterministic without float atomics: the (local id, token) pairs are sorted
// by id with CUB's stable radix sort, then one block per distinct id adds that id's dy rows in
// token order and adds the sum to dW. Cost: a sort of T keys plus one pass over dy; an id that
// many tokens share (padding) is summed by one block. No host synchronisation.
// Empty ids (0 tokens) work on both devices.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::ops {

struct EmbeddingArgs {
  int64_t vocab_start = 0;  // global id of weight row 0 (rank * V_local under vocab parallelism)
  int64_t vocab_size = -1;  // global vocabulary size; -1: vocab_start + weight rows
  Tensor invalid_count;     // optional, CUDA only: i32 [1] that the forward adds bad-id counts to
};

// y: ids.shape + [H], weight's dtype and device.
Tensor embedding_forward(const Tensor& ids, const Tensor& weight, const EmbeddingArgs& args = {});

// grad_y: ids.shape + [H]; grad_weight [V_local, H] (f32 for bf16/f16 grad_y).
void embedding_backward(const Tensor& grad_y, const Tensor& ids, Tensor& grad_weight,
                        bool accumulate, const EmbeddingArgs& args = {});

// Throws moe::Error naming the first id outside [0, vocab_size). Synchronises (copies CUDA ids
// to the host): for data pipelines and tests, not the training step.
void check_token_ids(const Tensor& ids, int64_t vocab_size);

}  // namespace moe::ops
