// ModelConfig <-> JSON: the model zoo's file format (configs/*.json) and the way a user writes a
// model of their own. Keys are ModelConfig's field names (Megatron's flag names with '_'), the
// MoE block's options sit in a "moe" object with MoEConfig's names, MLA in "mla", YaRN in
// "yarn" (null or absent: none); attention_type is "gqa" or "mla", rotary_style "half" or
// "interleaved", params_dtype a dtype name ("f32", "bf16", ...).
// The layer placement is written as Megatron's --moe-layer-freq: an integer N (layers 0, N, 2N,
// ... are MoE), a list [0, 1, 1], or the expression "([0]*3+[1]*58)".
//
// Reading: a missing key keeps ModelConfig's default; an unknown key is an error (a typo must
// not silently fall back to a default), except keys starting with '_', which are comments.
// moe.hidden_size and moe.init_method_std mirror the top-level hidden_size / init_method_std:
// copied from there when absent, and refused when present and different. Size fields are
// checked against their least value and bound (config_limits.h) as they are read, naming the
// key. The result is validate()d.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/nn/model_config.h"

namespace moe::nn {

// --moe-layer-freq -> one 0/1 entry per layer. Accepts "N" (N >= 1: layer i is MoE iff
// i % N == 0, Megatron's integer form), "[0,1,1]" and sums of repeated lists
// "([0]*3+[1]*58)" (Megatron's Python expression form). Errors name the flag and the text;
// the result must have num_layers entries.
std::vector<int> parse_moe_layer_freq(const std::string& text, int64_t num_layers);
// The shortest of those forms for a pattern: "N" when the pattern is every N-th layer,
// otherwise the run-length expression, e.g. "([0]*3+[1]*58)".
std::string format_moe_layer_freq(const std::vector<int>& pattern);

// Every field, so that model_config_to_json(a) == model_config_to_json(b) iff a and b agree.
nlohmann::json model_config_to_json(const ModelConfig& config);
// See the header comment; throws moe::Error naming the key for unknown keys or wrong types.
ModelConfig model_config_from_json(const nlohmann::json& json);
// Reads a JSON file in that format; errors name the path.
ModelConfig load_model_config(const std::string& path);

}  // namespace moe::nn
