// Shared pieces of the checkpoint tests: random Hugging Face-layout tensors for a config
// (optionally DeepSeek-style FP8 with block scales, MTP copies included), HF folders written
// with our own safetensors writer, and exact comparison of tensor maps.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "common/check.h"
#include "io/safetensors_testing.h"
#include "moe/checkpoint/convert.h"
#include "moe/checkpoint/fp8_blocks.h"
#include "moe/checkpoint/hf_config_export.h"
#include "moe/checkpoint/hf_names.h"
#include "moe/io/safetensors.h"
#include "moe/nn/model_config.h"

namespace moe::checkpoint::testing {

using TensorMap = std::map<std::string, Tensor>;

// Whether DeepSeek-V3 stores this HF tensor in FP8: the 2-D projection weights (attention,
// MLPs, experts, shared experts, eh_proj), not the router, norms, embedding or heads.
inline bool quantized_in_fp8(const std::string& name, const Shape& shape) {
  if (shape.size() != 2) return false;
  return name.find("_proj.weight") != std::string::npos || name.ends_with(".w1.weight") ||
         name.ends_with(".w2.weight") || name.ends_with(".w3.weight");
}

// Random HF tensors for every name of hf_model_mapping(config), in `dtype`; with `fp8`, the
// quantized_in_fp8 ones as fp8_e4m3 + f32 <name>_scale_inv in `block` blocks. MTP copies equal
// their originals. Values: normal(0, 0.5), different per tensor.
inline TensorMap random_hf_tensors(const nn::ModelConfig& config, DType dtype, uint64_t seed,
                                   bool fp8 = false, Fp8BlockSize block = {}) {
  TensorMap out;
  uint64_t i = 0;
  const std::vector<UnitMapping> units = hf_model_mapping(config);
  for (const UnitMapping& unit : units)
    for (const TensorMapping& m : unit.tensors)
      for (const auto& expert : m.hf_names)
        for (size_t p = 0; p < expert.size(); ++p) {
          const Shape& shape = m.part_shapes[p];
          const DType dt = m.buffer ? DType::f32 : dtype;
          Tensor t = test::random_normal(shape, dt, seed * 7919 + ++i, Device::cpu(), 0.5);
          if (fp8 && quantized_in_fp8(expert[p], shape)) {
            auto [q, s] = quantize_fp8_blocks(t, block);
            out[expert[p]] = q;
            out[expert[p] + kScaleSuffix] = s;
          } else {
            out[expert[p]] = t;
          }
        }
  for (const UnitMapping& unit : units)
    for (const HfCopy& c : unit.copies)
      if (!c.optional) out[c.hf_name] = out.at(c.original).clone();
  return out;
}

inline io::NamedTensors named(const TensorMap& map) {
  io::NamedTensors out(map.begin(), map.end());
  return out;
}

// Same names, and for each the same dtype, shape and bytes.
inline ::testing::AssertionResult same_tensors(const TensorMap& actual, const TensorMap& expected) {
  for (const auto& [name, t] : expected)
    if (!actual.count(name)) return ::testing::AssertionFailure() << "missing " << name;
  for (const auto& [name, t] : actual) {
    auto it = expected.find(name);
    if (it == expected.end()) return ::testing::AssertionFailure() << "unexpected " << name;
    ::testing::AssertionResult same = io::testing::same_bytes(t, it->second);
    if (!same) return same << " (" << name << ")";
  }
  return ::testing::AssertionSuccess();
}

// Every tensor of a safetensors checkpoint (file, folder or index).
inline TensorMap read_all(const std::string& path) {
  const io::SafetensorsCollection c = io::SafetensorsCollection::open(path);
  TensorMap out;
  for (const std::string& name : c.names()) out[name] = c.load(name);
  return out;
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// An HF folder: config.json (to_hf_config, with quantization_config when `block` is given),
// the tensors sharded at `max_shard_bytes`, and a tokenizer.json.
inline void write_hf_folder(const std::filesystem::path& dir, const nn::ModelConfig& config,
                            const TensorMap& tensors, DType dtype,
                            std::optional<Fp8BlockSize> block = std::nullopt,
                            uint64_t max_shard_bytes = 1 << 20) {
  std::filesystem::create_directories(dir);
  nlohmann::json j = to_hf_config(config, dtype);
  if (block) j["quantization_config"] = fp8_quantization_config(*block);
  write_text(dir / "config.json", j.dump(2));
  write_text(dir / "tokenizer.json", "{\"model\": {\"type\": \"BPE\"}}");
  io::write_safetensors_sharded(dir.string(), named(tensors), max_shard_bytes, {{"format", "pt"}});
}

}  // namespace moe::checkpoint::testing
