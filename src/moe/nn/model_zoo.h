// The model zoo: the published MoE models moecore trains, with their Hugging Face
// hyperparameters (Mixtral-8x7B/8x22B, Qwen2-57B-A14B, Qwen3-30B-A3B, Qwen3-235B-A22B,
// DeepSeek-V2, DeepSeek-V3), and a tiny variant of each family for tests and demos
// (mixtral-tiny, qwen2-moe-tiny, qwen3-moe-tiny, deepseek-v2-tiny, deepseek-v3-tiny: odd small
// sizes, a few layers, the family's structure kept: GQA or MLA, biases, q/k norms, dense
// leading layers, shared experts and their gate, routing rule, YaRN, MTP).
//
// The human-readable copies are configs/<name>.json (format: model_config_json.h); the same
// texts are compiled into the binary (model_zoo_data.cpp, written by configs/embed_configs.py),
// so model_zoo(name) works from any working directory. A test checks the two agree, and that
// every published entry equals from_hf_config() of its Hugging Face config.json.
#pragma once

#include <string>
#include <vector>

#include "moe/nn/model_config.h"

namespace moe::nn {

// The zoo's names, published models first, then the tiny ones.
std::vector<std::string> model_zoo_names();
// The validated config of a zoo model. An unknown name is an error listing the known ones.
ModelConfig model_zoo(const std::string& name);
// The JSON text of a zoo entry, as in configs/<name>.json.
const std::string& model_zoo_json(const std::string& name);

namespace detail {
struct ZooEntry {
  std::string name;
  std::string json;
};
const std::vector<ZooEntry>& zoo_entries();  // model_zoo_data.cpp
}  // namespace detail

}  // namespace moe::nn
