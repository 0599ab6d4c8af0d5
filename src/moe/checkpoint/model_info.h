// `moe info`: what a model is, from a zoo name or a model folder (HF or moecore): its config
// and its parameter counts, total and active per token (nn::describe(count_parameters)), and for
// a folder what the checkpoint holds (tensors, bytes, dtypes), without loading any weights.
#pragma once

#include <string>

#include "moe/nn/model_config.h"

namespace moe::checkpoint {

// A folder path (HF or moecore) or a zoo name; an unknown name that is not a folder is an error
// listing the zoo's names.
nn::ModelConfig resolve_model_config(const std::string& model);

// The report printed by `moe info --model <model>`.
std::string model_info(const std::string& model);

}  // namespace moe::checkpoint
