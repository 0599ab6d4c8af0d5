// Inverse frequencies of rotary embeddings: plain RoPE and YaRN, computed on the host in fp64
// following Hugging Face transformers' _compute_default_rope_parameters and
// _compute_yarn_parameters (formulas in rope.h). HF evaluates them in fp32 torch ops; fp64 here
// rounds to the nearest fp32 value within about one fp32 ulp of HF's.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "moe/ops/rope.h"

namespace moe::ops {
namespace {

void check_rotary_dim(int64_t rotary_dim, double theta, const char* op) {
  MOE_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0, op,
            ": the rotary dimension must be even and positive, got ", rotary_dim);
  MOE_CHECK(std::isfinite(theta) && theta > 1.0, op, ": theta (rope base) must be > 1, got ",
            theta);
}

// pos_freq[i] = theta^(2i / Dr).
double pos_freq(int64_t i, int64_t rotary_dim, double theta) {
  return std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(rotary_dim));
}

// The dimension index whose wavelength makes `rotations` turns over `max_positions` positions.
double correction_dim(double rotations, int64_t rotary_dim, double theta, double max_positions) {
  return static_cast<double>(rotary_dim) *
         std::log(max_positions / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(theta));
}

}  // namespace

double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

RotaryFrequencies rope_frequencies(int64_t rotary_dim, double theta) {
  check_rotary_dim(rotary_dim, theta, "rope_frequencies");
  RotaryFrequencies f;
  f.inv_freq.resize(static_cast<size_t>(rotary_dim / 2));
  for (int64_t i = 0; i < rotary_dim / 2; ++i)
    f.inv_freq[static_cast<size_t>(i)] = 1.0 / pos_freq(i, rotary_dim, theta);
  return f;
}

RotaryFrequencies yarn_frequencies(int64_t rotary_dim, double theta, const YarnScaling& yarn) {
  const char* op = "yarn_frequencies";
  check_rotary_dim(rotary_dim, theta, op);
  MOE_CHECK(std::isfinite(yarn.factor) && yarn.factor > 0, op, ": factor must be > 0, got ",
            yarn.factor);
  MOE_CHECK(yarn.original_max_position_embeddings > 0, op,
            ": original_max_position_embeddings must be > 0, got ",
            yarn.original_max_position_embeddings);
  MOE_CHECK(yarn.beta_fast > 0 && yarn.beta_slow > 0, op, ": beta_fast and beta_slow must be > 0, got ",
            yarn.beta_fast, " and ", yarn.beta_slow);

  RotaryFrequencies f;
  if (yarn.attention_factor.has_value()) {
    f.attention_scale = *yarn.attention_factor;
  } else if (yarn.mscale != 0.0 && yarn.mscale_all_dim != 0.0) {
    f.attention_scale = yarn_get_mscale(yarn.factor, yarn.mscale) /
                        yarn_get_mscale(yarn.factor, yarn.mscale_all_dim);
  } else {
    f.attention_scale = yarn_get_mscale(yarn.factor, 1.0);
  }

  const double max_positions = static_cast<double>(yarn.original_max_position_embeddings);
  double low = correction_dim(yarn.beta_fast, rotary_dim, theta, max_positions);
  double high = correction_dim(yarn.beta_slow, rotary_dim, theta, max_positions);
  if (yarn.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(rotary_dim - 1));
  if (low == high) high += 0.001;  // HF: "prevent singularity"

  const int64_t half = rotary_dim / 2;
  f.inv_freq.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const double pf = pos_freq(i, rotary_dim, theta);
    const double extrapolation = 1.0 / pf;
    const double interpolation = 1.0 / (yarn.factor * pf);
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double extrapolation_factor = 1.0 - ramp;
    f.inv_freq[static_cast<size_t>(i)] =
        interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return f;
}

Tensor inv_freq_tensor(const RotaryFrequencies& freqs, DType dtype, Device device) {
  MOE_CHECK(dtype == DType::f32 || dtype == DType::f64,
            "inv_freq_tensor: dtype must be f32 or f64, got ", dtype);
  const Shape shape{static_cast<int64_t>(freqs.inv_freq.size())};
  const Tensor host = Tensor::from_vector(freqs.inv_freq, shape);
  return dtype == DType::f64 ? host.to(device) : host.to(dtype).to(device);
}

}  // namespace moe::ops
