// The dropout of one training forward as the model hands it to its layers: the rates of the
// config (--hidden-dropout, --attention-dropout), the model's seed and the micro-batch's first
// global sample (ops/dropout.h's formula). Default-constructed: no dropout (evaluation,
// generation, logits, and every forward the trainer does not mark as training).
#pragma once

#include <cstdint>

#include "moe/ops/dropout.h"

namespace moe::nn {

struct LayerDropout {
  double hidden = 0.0;     // --hidden-dropout
  double attention = 0.0;  // --attention-dropout
  uint64_t seed = 0;
  int64_t first_sample = 0;
  // Sequence parallelism: the token tensors between the blocks hold the positions
  // [seq_offset, seq_offset + S_local) of sequences of seq_total (0: the whole sequence).
  int64_t seq_offset = 0;
  int64_t seq_total = 0;

  // The args of `site` in layer `layer` (-1: the decoder's embedding); p = 0 when off.
  ops::DropoutArgs args(int64_t layer, ops::DropoutSite site) const {
    ops::DropoutArgs a;
    a.p = site == ops::DropoutSite::attention_probs ? attention : hidden;
    if (a.p == 0.0) return a;
    a.key = ops::dropout_key(seed, layer, site);
    a.first_sample = first_sample;
    if (site != ops::DropoutSite::attention_probs) {
      a.seq_offset = seq_offset;
      a.seq_total = seq_total;
    }
    return a;
  }
};

}  // namespace moe::nn
