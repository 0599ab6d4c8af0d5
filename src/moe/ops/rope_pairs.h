// Internal: which features of a head form rotary pair i, for each RotaryLayout (rope.h), shared
// by the CPU reference and the CUDA kernel so both index the same way.
#pragma once

#include <cstdint>

#include "moe/core/host_device.h"
#include "moe/ops/rope.h"

namespace moe::ops::detail {

struct RotaryPair {
  int64_t in_a, in_b;    // read:  (u, v)
  int64_t out_a, out_b;  // write: (u', v')
};

// Pair i in [0, half), half = Dr / 2.
MOE_HD RotaryPair rotary_pair(RotaryLayout layout, int64_t i, int64_t half) {
  switch (layout) {
    case RotaryLayout::interleaved: return {2 * i, 2 * i + 1, 2 * i, 2 * i + 1};
    case RotaryLayout::interleaved_to_half: return {2 * i, 2 * i + 1, i, i + half};
    case RotaryLayout::half:
    default: return {i, i + half, i, i + half};
  }
}

// Forward: (a, b) -> (a c - b s, b c + a s). Inverse (the transpose): (a', b') ->
// (a' c + b' s, b' c - a' s), where a' and b' are read at the output indices.
template <class C>
MOE_HD void rotate_pair(C a, C b, C c, C s, bool inverse, C& out_a, C& out_b) {
  if (!inverse) {
    out_a = a * c - b * s;
    out_b = b * c + a * s;
  } else {
    out_a = a * c + b * s;
    out_b = b * c - a * s;
  }
}

}  // namespace moe::ops::detail
