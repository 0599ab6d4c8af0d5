// Counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11): the value at element i
// of a draw depends only on (seed, i), so the CPU and every GPU produce the same numbers
// regardless of thread layout, and a draw can be regenerated instead of stored.
//   uniform: u = (bits >> 8 + 0.5) * 2^-24 in (0, 1), exact in float; value = fma(hi - lo, u, lo)
//   normal:  Box-Muller on a pair of uniforms, computed in double, then rounded
#pragma once

#include <cmath>
#include <cstdint>

#include "moe/core/host_device.h"

namespace moe {

struct Philox4 {
  uint32_t v[4];
};

MOE_HD Philox4 philox4x32_10(uint64_t seed, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

MOE_HD float bits_to_unit_float(uint32_t bits) {
  return (static_cast<float>(bits >> 8) + 0.5f) * 5.9604644775390625e-08f;  // 2^-24
}

// Uniform in (lo, hi) for element `index` of the draw `seed`.
MOE_HD float philox_uniform(uint64_t seed, uint64_t index, float lo, float hi) {
  const Philox4 r = philox4x32_10(seed, index >> 2);
  return fmaf(hi - lo, bits_to_unit_float(r.v[index & 3]), lo);
}

// Standard normal for element `index` of the draw `seed` (pairs share one Box-Muller draw).
MOE_HD double philox_normal(uint64_t seed, uint64_t index) {
  const Philox4 r = philox4x32_10(seed, index >> 1);
  const double u1 = (static_cast<double>(r.v[0]) + 0.5) * 2.3283064365386963e-10;  // 2^-32
  const double u2 = (static_cast<double>(r.v[1]) + 0.5) * 2.3283064365386963e-10;
  const double radius = sqrt(-2.0 * log(u1));
  const double angle = 6.283185307179586 * u2;
  return (index & 1) ? radius * sin(angle) : radius * cos(angle);
}

class Tensor;
// Fill a floating tensor in place; identical values on CPU and CUDA.
// `offset` is the draw index of t's first element, so a slice of a larger tensor can be
// filled with exactly the values the whole tensor would get.
void fill_uniform(Tensor& t, uint64_t seed, double lo, double hi, uint64_t offset = 0);
void fill_normal(Tensor& t, uint64_t seed, double mean, double stddev, uint64_t offset = 0);

}  // namespace moe
