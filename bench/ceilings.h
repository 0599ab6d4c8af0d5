// The GPU's own ceilings, measured in the same run as a benchmark so every figure can be
// given as a fraction of them: the dense bf16 GEMM rate (cuBLASLt, 8192^3) and the
// device-to-device copy bandwidth (bytes read + written).
#pragma once

#include "moe/core/device.h"

namespace moe::bench {

struct Ceilings {
  double gemm_tflops = 0;    // bf16 in, fp32 accumulate, bf16 out
  double copy_gb_per_s = 0;  // read + write
};

Ceilings measure_ceilings(Device device);

// Median of the per-iteration times (ms) of `iters` runs of fn after `warmup` runs, timed with
// device events around each run.
template <class Fn>
double median_ms(Device device, int warmup, int iters, Fn&& fn);

}  // namespace moe::bench

#include "ceilings_impl.h"
