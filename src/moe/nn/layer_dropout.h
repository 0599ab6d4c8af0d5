// The dropout of one training forward as the model hands it to its layers: the rates of the
// config (--hidden-dropout, --attention-dropout), the model's seed and the micro-batch's first
// global sample (ops/dropout.h's formula). Default-constructed: no dropout (evaluation,
// generation, logits, and every forward the trainer does not mark as training).
//
// Token tensors between the layers hold this rank's rows of the micro-batch's sequences: all
// of them, or under sequence / context parallelism some blocks of positions. `segments` lists
// them (rows of the tensor and the global position of the first), so every rank draws the masks
// the one-rank model draws for the same tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/ops/dropout.h"

namespace moe::nn {

struct LayerDropout {
  double hidden = 0.0;     // --hidden-dropout
  double attention = 0.0;  // --attention-dropout
  uint64_t seed = 0;
  int64_t first_sample = 0;
  // Rows [row_begin, row_begin + rows) of a token tensor [S_local, B, F] are the positions
  // [seq_offset, seq_offset + rows) of sequences of seq_total. Empty: the tensor is the whole
  // sequence.
  struct Segment {
    int64_t row_begin = 0, rows = 0, seq_offset = 0;
  };
  std::vector<Segment> segments;
  int64_t seq_total = 0;

  // The args of `site` in layer `layer` (-1: the decoder's embedding) for the whole tensor; p = 0
  // when off.
  ops::DropoutArgs args(int64_t layer, ops::DropoutSite site) const {
    ops::DropoutArgs a;
    a.p = site == ops::DropoutSite::attention_probs ? attention : hidden;
    if (a.p == 0.0) return a;
    a.key = ops::dropout_key(seed, layer, site);
    a.first_sample = first_sample;
    return a;
  }
  // x = dropout(x) in place for a token tensor of this rank's rows (hidden dropout sites).
  void apply_(Tensor& x, int64_t layer, ops::DropoutSite site) const {
    const ops::DropoutArgs a = args(layer, site);
    if (!a.active()) return;
    if (segments.empty()) return ops::dropout_(x, a);
    for (const Segment& s : segments) {
      ops::DropoutArgs part = a;
      part.seq_offset = s.seq_offset;
      part.seq_total = seq_total;
      Tensor rows = x.rows(s.row_begin, s.rows);
      ops::dropout_(rows, part);
    }
  }
  // Its backward: the same masks applied to dy (dy itself when off).
  Tensor backward(const Tensor& dy, int64_t layer, ops::DropoutSite site) const {
    const ops::DropoutArgs a = args(layer, site);
    if (!a.active()) return dy;
    if (segments.empty()) return ops::dropout_backward(dy, a);  // one pass, no copy first
    Tensor dx = dy.clone();
    apply_(dx, layer, site);
    return dx;
  }
};

}  // namespace moe::nn
