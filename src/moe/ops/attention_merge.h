// Merging partial attention results (ring attention for context parallelism): the attention of
// the same queries over several key/value blocks, computed one block at a time by
// attention_forward (ops/attention.h), combined into exactly the attention over all the keys,
// FlashAttention's online softmax across blocks. A block's (out, lse) is the softmax over its own
// keys; two of them merge as one softmax over the union:
//   lse = log(exp(lse_acc) + exp(lse_b))
//   out = exp(lse_acc - lse) out_acc + exp(lse_b - lse) out_b
// computed stably from the larger and the smaller of the two lse (hi, lo; ties take the
// accumulator as hi):
//   e = exp(lo - hi) in (0, 1],  lse = hi + log1p(e),
//   out = w_hi out_hi + w_lo out_lo,  w_hi = 1 / (1 + e),  w_lo = e w_hi
// (the same weights: exp(hi - lse) = 1 / (1 + e), exp(lo - lse) = e / (1 + e)). Because the
// roles follow the values, not the arguments, merging b into a and a into b give the same bits;
// a chain of merges is order-independent up to rounding.
//
// lse = -inf means "no keys seen yet": that side contributes nothing and its out is never read
//   lse_acc = -inf:  out_acc = out_b, lse_acc = lse_b       (exactly: a copy)
//   lse_b   = -inf:  the accumulator row is left as it is   (exactly)
//   both    = -inf:  out_acc = 0, lse_acc = -inf
// so an accumulator starts as lse -inf with any out (zeros, or Tensor::empty), and the first
// merge copies the first block in.
//
// Shapes, in the attention layout (ops/attention.h): out_acc [B, Sq, Hq, Dv] (bshd) or
// [Sq, B, Hq, Dv] (sbhd), lse_acc [B, Hq, Sq]; out_b [B, n, Hq, Dv] or [n, B, Hq, Dv], lse_b
// [B, Hq, n]. The block covers accumulator rows [row_begin, row_begin + n) (n is out_b's sequence
// length, 0 <= row_begin, row_begin + n <= Sq): a block computed for only some of the queries
// (e.g. the second half of a causal chunk, the only rows that see a later key block) merges into
// those rows; the others are untouched.
//
// dtypes: out_acc and out_b share one of f64, f32, bf16, f16 (CUDA: f32 and bf16), computed in
// f32 (f64 for f64) and rounded once to the out dtype; lse_acc and lse_b are f32 (f64 with f64
// out), as attention_forward returns them. All four on one device. CUDA: one pass over the rows,
// deterministic (no atomics), no host synchronisation. Shape, dtype, device and row-range
// mismatches throw moe::Error naming the argument.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"
#include "moe/ops/attention.h"

namespace moe::ops {

// In place: (out_acc, lse_acc) rows [row_begin, row_begin + n) become the merge of themselves
// and (out_b, lse_b).
void attention_merge_(Tensor& out_acc, Tensor& lse_acc, const Tensor& out_b, const Tensor& lse_b,
                      AttentionLayout layout, int64_t row_begin = 0);

}  // namespace moe::ops
