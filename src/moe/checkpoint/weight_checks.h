// The checks every loaded model weight passes on the host before it is uploaded (model_io.h):
// non-finite values are refused, naming the tensor, its file and the first bad element (a NaN
// or Inf weight would only show as a NaN loss).
#pragma once

#include <cstdint>
#include <string>

#include "moe/core/tensor.h"

namespace moe::checkpoint {

// The first element of a CPU float tensor that is NaN or +-Inf, by its bits (exponent all
// ones), in one pass and for every float dtype alike; -1 when every element is finite (and for
// non-float dtypes).
int64_t first_non_finite(const Tensor& t);

// Throws when `t` (CPU) holds a NaN or Inf: "tensor <name> [(fused into moecore <fused_into>)]
// in <where> holds a non-finite value (NaN or Inf) at element <first_element + i>". `t` may be
// a part of the named tensor that starts at its element `first_element` (rows of it).
void check_finite(const Tensor& t, const std::string& name, const std::string& where,
                  const std::string& fused_into = "", int64_t first_element = 0);

}  // namespace moe::checkpoint
