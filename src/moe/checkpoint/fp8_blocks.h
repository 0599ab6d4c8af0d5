// DeepSeek-V3's FP8 weights: float8_e4m3fn values with one float scale per 128 x 128 block
// (Hugging Face config.json: "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
// "weight_block_size": [128, 128], ...}). A weight W [R, C] is stored as
//   W.weight            fp8 [R, C]
//   W.weight_scale_inv  f32 [ceil(R / 128), ceil(C / 128)]
// and its value is   w[i, j] = float(fp8[i, j]) * scale_inv[i / 128, j / 128]
// (DeepSeek's weight_dequant kernel: the product in f32, then cast to the model dtype; the last
// block of a row or column may be partial).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "moe/core/tensor.h"

namespace moe::checkpoint {

struct Fp8BlockSize {
  int64_t rows = 128;
  int64_t cols = 128;
  friend bool operator==(const Fp8BlockSize&, const Fp8BlockSize&) = default;
};

// The suffix of a weight's block scales: "<weight name>_scale_inv".
inline constexpr const char* kScaleSuffix = "_scale_inv";

// [ceil(R / rows), ceil(C / cols)] for a 2-D weight shape [R, C].
Shape fp8_scale_shape(const Shape& weight_shape, Fp8BlockSize block);

// weight [R, C] fp8_e4m3 or fp8_e5m2 and scale_inv [ceil(R/rows), ceil(C/cols)] (f32, bf16 or
// f64) on the CPU -> [R, C] in out_dtype (f32, bf16, f16 or f64): each value computed as
// float(fp8) * float(scale) in f32, then rounded once to out_dtype (round to nearest even).
// Wrong ranks, dtypes or scale shapes are errors naming `what` (the tensor's name).
Tensor dequantize_fp8_blocks(const Tensor& weight, const Tensor& scale_inv, DType out_dtype,
                             Fp8BlockSize block = {}, const std::string& what = "weight");

// The inverse, for tests and tools: per block, scale_inv = amax / 448 (1 for an all-zero block)
// and fp8 = e4m3(w / scale_inv). Returns {weight fp8_e4m3 [R, C], scale_inv f32}.
std::pair<Tensor, Tensor> quantize_fp8_blocks(const Tensor& weight, Fp8BlockSize block = {});

// The block size of a Hugging Face config.json's quantization_config, or nullopt when the
// config has none. Other quant_method values, fmt other than e4m3, and block sizes that are not
// two positive integers are errors (moecore reads only DeepSeek's block-scaled FP8).
std::optional<Fp8BlockSize> fp8_block_size_of(const nlohmann::json& quantization_config);

// DeepSeek-V3's quantization_config for `block` (what HF export writes when FP8 weights were
// kept): {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
// "weight_block_size": [rows, cols]}.
nlohmann::json fp8_quantization_config(Fp8BlockSize block);

}  // namespace moe::checkpoint
