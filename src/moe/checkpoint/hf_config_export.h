// ModelConfig -> Hugging Face config.json for the model's family: the inverse of
// from_hf_config (hf_config_import.h has the field-by-field mapping), written for HF export
// (`moe convert --to hf`).
//
// Only what changes the model's function is checked: after writing, the result is read back
// with from_hf_config and compared with `config` on every field except the training options
// HF cannot hold (load-balancing type, aux / z-loss coefficients, jitter, dispatcher, capacity,
// grouped GEMM, parallel sizes, params dtype, seed, bias update rate, router dtype, MTP loss
// factor, hidden dropout), which are listed in `notes` when they differ from what HF implies.
// The attention dropout is HF's attention_dropout. A model that HF
// cannot express (a dense layer in Mixtral, partial rotary, a shared expert without Qwen2's
// gate, an MoE placement HF cannot write, ...) is an error naming the fields that differ.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/core/dtype.h"
#include "moe/nn/model_config.h"

namespace moe::checkpoint {

// `torch_dtype` is the dtype of the exported weights ("bfloat16", "float32", ...).
nlohmann::json to_hf_config(const nn::ModelConfig& config, DType torch_dtype = DType::bf16,
                            std::vector<std::string>* notes = nullptr);

// "bfloat16" / "float32" / "float16" / "float64" / "float8_e4m3fn".
std::string torch_dtype_name(DType dtype);

}  // namespace moe::checkpoint
