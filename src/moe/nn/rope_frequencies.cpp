#include "moe/nn/rope_frequencies.h"

namespace moe::nn {

ops::RotaryFrequencies rope_frequencies(const ModelConfig& config, int64_t rotary_dim) {
  if (!config.yarn) return ops::rope_frequencies(rotary_dim, config.rotary_base);
  const YarnConfig& y = *config.yarn;
  ops::YarnScaling scaling;
  scaling.factor = y.factor;
  scaling.original_max_position_embeddings = y.original_max_position_embeddings;
  scaling.beta_fast = y.beta_fast;
  scaling.beta_slow = y.beta_slow;
  scaling.mscale = y.mscale;
  scaling.mscale_all_dim = y.mscale_all_dim;
  return ops::yarn_frequencies(rotary_dim, config.rotary_base, scaling);
}

}  // namespace moe::nn
