// Whole-folder conversion, Hugging Face <-> moecore (`moe convert`), streamed: the source stays
// memory-mapped, one unit (embedding, layer, head) is converted at a time, and output shards are
// written as they fill (shard_writer.h), so a 671B model never sits in memory. The output is
// written into a temporary folder that replaces `dst` at the end (atomic_folder.h).
//
//   hf -> moecore   config.json -> model_config.json; tensors renamed and fused (convert.h);
//                   FP8 weights dequantized to options.dtype, or kept with their fused scales
//                   (keep_fp8, and quantization_config.json records the block size)
//   moecore -> hf   model_config.json -> config.json (to_hf_config, with quantization_config
//                   when the folder holds FP8); tensors split back; MTP copies re-created
// Tokenizer and generation files (tokenizer.json, tokenizer_config.json, tokenizer.model,
// special_tokens_map.json, vocab.json, merges.txt, added_tokens.json, generation_config.json)
// are copied through when present.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moe/checkpoint/model_io.h"

namespace moe::checkpoint {

struct ConvertCheckpointOptions {
  CheckpointFormat from = CheckpointFormat::hf;
  CheckpointFormat to = CheckpointFormat::moecore;
  bool keep_fp8 = false;       // hf -> moecore: keep FP8 weights and their scales
  DType dtype = DType::bf16;   // hf -> moecore: the dtype of dequantized FP8 weights (bf16, f32)
  uint64_t max_shard_bytes = 5'000'000'000;
  bool overwrite = false;      // replace an existing output folder
  std::function<void(const std::string&)> log;  // progress and notes (may be empty)
};

struct ConvertSummary {
  nn::ModelConfig config;
  int64_t tensors_read = 0;  // source tensors
  int64_t tensors_written = 0;
  uint64_t bytes_written = 0;
  std::vector<std::string> files;   // safetensors files written (no folder)
  std::vector<std::string> copied;  // tokenizer and other files copied through
  std::vector<std::string> notes;
};

ConvertSummary convert_checkpoint(const std::string& src, const std::string& dst,
                                  const ConvertCheckpointOptions& options);

// The files copied through (tokenizer and generation config).
const std::vector<std::string>& passthrough_files();

}  // namespace moe::checkpoint
