// Helpers of the attention tests: the bshd <-> sbhd transposition of a 4-d tensor.
#pragma once

#include <vector>

#include "moe/core/tensor.h"
#include "moe/ops/attention.h"

namespace moe::test {

// [d0, d1, d2, d3] -> [d1, d0, d2, d3]: bshd <-> sbhd (its own inverse).
inline Tensor swap_leading(const Tensor& t) {
  const Shape& s = t.shape();
  const std::vector<double> x = t.to_double_vector();
  std::vector<double> y(x.size());
  const int64_t inner = s[2] * s[3];
  for (int64_t a = 0; a < s[0]; ++a)
    for (int64_t b = 0; b < s[1]; ++b)
      for (int64_t e = 0; e < inner; ++e)
        y[size_t((b * s[0] + a) * inner + e)] = x[size_t((a * s[1] + b) * inner + e)];
  return Tensor::from_vector(y, {s[1], s[0], s[2], s[3]}).to(t.dtype());
}

// A bshd tensor in `layout` (and back: the swap is its own inverse).
inline Tensor in_layout(const Tensor& bshd, ops::AttentionLayout layout) {
  return layout == ops::AttentionLayout::bshd ? bshd : swap_leading(bshd);
}

}  // namespace moe::test
