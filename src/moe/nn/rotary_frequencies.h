// The rotary frequencies a model's attention uses: plain RoPE at --rotary-base, or YaRN's
// (ModelConfig::yarn, DeepSeek-V2/V3) with its cos/sin attention factor. Shared by the GQA and
// MLA modules.
#pragma once

#include <cstdint>

#include "moe/nn/model_config.h"
#include "moe/ops/rope.h"

namespace moe::nn {

ops::RotaryFrequencies rotary_frequencies(const ModelConfig& config, int64_t rotary_dim);

}  // namespace moe::nn
