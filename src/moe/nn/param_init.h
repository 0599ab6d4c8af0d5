// Initialisation helpers shared by the decoder modules (GPTModel and its layers), following
// Megatron-Core's defaults:
//   - every weight matrix and the embedding ~ normal(0, init_method_std);
//   - the layers that write into the residual stream (attention's output projection, the MLP's
//     fc2 / down projection, the routed and shared experts' fc2) use Megatron's
//     output_layer_init_method: normal(0, init_method_std / sqrt(2 * num_layers)), so the
//     residual stream's variance does not grow with depth (GPT-2, Radford et al. 2019, 2.3);
//   - norm weights are ones, biases zeros.
// Each tensor draws from the counter-based RNG with its own seed, mixed from the model seed,
// the layer index and a per-tensor name salt, so no two tensors share values and a model built
// on another device (or mapping) starts from the same numbers.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

namespace moe::nn {

// A 64-bit mix (splitmix64's finaliser on a boost::hash_combine-style combination).
inline uint64_t mix_seed64(uint64_t a, uint64_t b) {
  uint64_t x = a ^ (b + 0x9E3779B97F4A7C15ULL + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 29;
  x *= 0x94D049BB133111EBULL;
  return x ^ (x >> 32);
}

// FNV-1a of a short name, the salt that distinguishes the tensors of one layer.
inline uint64_t name_salt(std::string_view name) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ULL;
  return h;
}

// The seed of tensor `name` of layer `layer` (-1 for tensors outside the layers).
inline uint64_t parameter_seed(uint64_t model_seed, int64_t layer, std::string_view name) {
  return mix_seed64(mix_seed64(model_seed, static_cast<uint64_t>(layer + 1)), name_salt(name));
}

// Megatron's output_layer_init_method standard deviation: std / sqrt(2 * num_layers).
inline double output_layer_std(double init_method_std, int64_t num_layers) {
  return init_method_std / std::sqrt(2.0 * static_cast<double>(num_layers > 0 ? num_layers : 1));
}

}  // namespace moe::nn
