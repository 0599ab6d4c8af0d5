// Internal to attention_merge: the per-row merge rule of attention_merge.h (weights from the
// two lse, then one value per out element), shared by the CPU reference and the CUDA kernel so
// that both take the same branches in the same operation order. Not part of the public API.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "moe/core/host_device.h"

namespace moe::ops::detail {

// How many of a row's two sides hold keys: none (out 0), one (out = that side's, copied), or
// both (the weighted sum).
enum class MergeTerms : int { none, one, both };

template <class A>
struct MergeWeights {
  A lse;           // the merged logsumexp
  A w_hi, w_lo;    // weights of the side with the larger and the smaller lse
  bool acc_is_hi;  // the accumulator has the larger lse (or they tie)
  MergeTerms terms;
};

template <class A>
MOE_HD A merge_exp(A x) {
  if constexpr (std::is_same_v<A, double>)
    return exp(x);
  else
    return expf(x);
}

template <class A>
MOE_HD A merge_log1p(A x) {
  if constexpr (std::is_same_v<A, double>)
    return log1p(x);
  else
    return log1pf(x);
}

// lse = hi + log1p(e), w_hi = 1 / (1 + e), w_lo = e w_hi with e = exp(lo - hi); -inf is "no
// keys". A NaN lse gives a NaN lse (and out).
template <class A>
MOE_HD MergeWeights<A> merge_weights(A lse_acc, A lse_b) {
  MergeWeights<A> w;
  w.acc_is_hi = !(lse_b > lse_acc);
  const A hi = w.acc_is_hi ? lse_acc : lse_b;
  const A lo = w.acc_is_hi ? lse_b : lse_acc;
  if (hi == A(-INFINITY)) {
    w.terms = MergeTerms::none;
    w.lse = A(-INFINITY);
    w.w_hi = w.w_lo = A(0);
  } else if (lo == A(-INFINITY)) {
    w.terms = MergeTerms::one;
    w.lse = hi;
    w.w_hi = A(1);
    w.w_lo = A(0);
  } else {
    w.terms = MergeTerms::both;
    const A e = merge_exp(lo - hi);
    w.lse = hi + merge_log1p(e);
    w.w_hi = A(1) / (A(1) + e);
    w.w_lo = e * w.w_hi;
  }
  return w;
}

// Where the rows live. Row r of the block is its r-th [Dv] vector of out_b in memory order
// ((b, i, h) for bshd, (i, b, h) for sbhd); block row i is accumulator row row_begin + i.
struct MergeShape {
  int64_t batch, acc_seq, block_seq, heads, v_head_dim, row_begin;
  bool bshd;
  MOE_HD int64_t rows() const { return batch * block_seq * heads; }
};

struct MergeRow {
  int64_t acc_row;  // [Dv] vector index in out_acc
  int64_t lse_acc;  // element of lse_acc [B, Hq, Sq]
  int64_t lse_b;    // element of lse_b [B, Hq, n]
};

MOE_HD MergeRow merge_row(const MergeShape& s, int64_t r) {
  const int64_t h = r % s.heads, outer = r / s.heads;
  const int64_t i = s.bshd ? outer % s.block_seq : outer / s.batch;
  const int64_t b = s.bshd ? outer / s.block_seq : outer % s.batch;
  const int64_t row = s.row_begin + i;
  MergeRow m;
  m.acc_row = s.bshd ? (b * s.acc_seq + row) * s.heads + h : (row * s.batch + b) * s.heads + h;
  m.lse_acc = (b * s.heads + h) * s.acc_seq + row;
  m.lse_b = (b * s.heads + h) * s.block_seq + i;
  return m;
}

// One merged out element from the accumulator's and the block's.
template <class A>
MOE_HD A merge_value(const MergeWeights<A>& w, A out_acc, A out_b) {
  const A hi = w.acc_is_hi ? out_acc : out_b;
  const A lo = w.acc_is_hi ? out_b : out_acc;
  switch (w.terms) {
    case MergeTerms::none:
      return A(0);
    case MergeTerms::one:
      return hi;
    default:
      return w.w_hi * hi + w.w_lo * lo;
  }
}

}  // namespace moe::ops::detail
