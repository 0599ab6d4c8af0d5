// Bounds of the size fields of a model config (ModelConfig, MoEConfig, model_config.json,
// Hugging Face config.json). validate() and the readers check each size field against its least
// value and its bound BEFORE computing anything from it, so that "num_attention_heads": 0 or
// "num_hidden_layers": -1 or a vocabulary of 2^40 is an error naming the field, not a division
// by zero, a vector of 2^64 entries or a failed allocation.
//
// The upper bounds are sanity bounds far above any published model (the deepest MoE models have
// ~100 layers, the widest layers ~50k features, the most experts 256), except the vocabulary,
// whose bound is a real one: the output layer's GEMM has the vocabulary as a dimension, and
// BLAS / cuBLAS dimensions are 32-bit.
#pragma once

#include <cstdint>
#include <string_view>

namespace moe::nn {

struct SizeLimit {
  int64_t max;
  const char* reason;  // said in the message when a value exceeds max
};

// num_layers, mtp_num_layers, layer indices.
inline constexpr SizeLimit kLayerLimit{4096, "a sanity bound: 30 times the deepest models"};
// hidden / FFN / expert / head / latent sizes.
inline constexpr SizeLimit kWidthLimit{int64_t{1} << 20,
                                       "a sanity bound: 20 times the widest layers of any model"};
// attention heads, query groups, experts, router groups.
inline constexpr SizeLimit kCountLimit{int64_t{1} << 16,
                                       "a sanity bound: 256 times the largest counts of any model"};
// vocab_size.
inline constexpr SizeLimit kVocabLimit{
    2147483647, "the vocabulary is a dimension of the output layer's GEMM, 32-bit in BLAS/cuBLAS"};
// max_position_embeddings, YaRN's original_max_position_embeddings.
inline constexpr SizeLimit kPositionLimit{2147483647, "a sanity bound: positions beyond 2^31 - 1"};
// The whole model, in parameters (2^53: 36 PB in fp32). Keeps every count in 64 bits.
inline constexpr double kMaxParameters = 9007199254740992.0;

// Throws moe::Error unless min <= value <= limit.max, naming `field`:
//   "<field> must be positive, got 0" (min 1), "<field> must not be negative, got -1" (min 0),
//   "<field> must be at least 2, got 1", "<field> 1099511627776 exceeds 2147483647 (<reason>)".
void check_size(std::string_view field, int64_t value, int64_t min, const SizeLimit& limit);

}  // namespace moe::nn
