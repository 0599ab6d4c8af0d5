// The RoPE frequencies a model's attention uses: plain RoPE at --rotary-base, or YaRN's
// (ModelConfig::yarn, DeepSeek-V2/V3) with its cos/sin attention factor; the model-level choice
// between ops::rope_frequencies and ops::yarn_frequencies (ops/rope.h). Shared by the GQA and
// MLA modules.
#pragma once

#include <cstdint>

#include "moe/nn/model_config.h"
#include "moe/ops/rope.h"

namespace moe::nn {

ops::RotaryFrequencies rope_frequencies(const ModelConfig& config, int64_t rotary_dim);

}  // namespace moe::nn
