// Gradient checks of modules: every parameter's analytic gradient against fp64 central
// differences of the same scalar objective; and the sample standard deviation initialisation
// tests compare with Megatron's std.
#pragma once

#include <cmath>
#include <functional>
#include <vector>

#include "common/check.h"
#include "moe/nn/parameter.h"

namespace moe::test {

// Call after the backward that filled the gradients; `objective` recomputes the loss.
inline void expect_parameter_gradients(const std::function<double()>& objective,
                                       const std::vector<nn::Parameter*>& params) {
  for (nn::Parameter* p : params) {
    const Tensor analytic = p->grad_value().clone();
    EXPECT_TRUE(close(analytic, numerical_gradient(objective, p->value), kGradCheckTol, p->name));
  }
}

inline double sample_std(const Tensor& t) {
  const std::vector<double> x = t.to_double_vector();
  double sum = 0, sq = 0;
  for (double v : x) sum += v, sq += v * v;
  const double n = static_cast<double>(x.size()), mean = sum / n;
  return std::sqrt(sq / n - mean * mean);
}

}  // namespace moe::test
