// Model folders: reading a Hugging Face folder (config.json + safetensors) or a moecore folder
// (model_config.json + safetensors, moecore names: hf_names.h) into a GPTModel, and saving a
// GPTModel as a moecore folder.
//
// A moecore folder holds
//   model_config.json          nn::model_config_to_json (model_config_json.h)
//   model.safetensors          or model-0000i-of-0000n.safetensors + model.safetensors.index.json
//   quantization_config.json   only when FP8 weights were kept (`moe convert --keep-fp8`): HF's
//                              quantization_config, e.g. {"quant_method": "fp8",
//                              "weight_block_size": [128, 128], ...}
//   tokenizer files            copied through by `moe convert`
// The iteration folder of a sharded training checkpoint (model_config.json, index.json and the
// ranks' shard files: sharded_tensor_source.h) reads as a moecore folder too.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moe/checkpoint/fp8_blocks.h"
#include "moe/core/tensor.h"
#include "moe/nn/gpt_model.h"
#include "moe/nn/model_config.h"

namespace moe::checkpoint {

class TensorSource;  // tensor_source.h

enum class CheckpointFormat { hf, moecore };

const char* format_name(CheckpointFormat format);  // "hf" / "moecore"
CheckpointFormat parse_format(const std::string& name);  // "hf" | "moecore", else an error

// moecore iff the folder holds model_config.json, HF iff it holds config.json. Not a folder,
// neither file, or both are errors naming the folder.
CheckpointFormat detect_format(const std::string& dir);

// The folder's model config (HF: nn::from_hf_config_file, named after the folder; moecore:
// nn::load_model_config). A Hugging Face folder whose config announces MTP layers
// (num_nextn_predict_layers) but holds none of their tensors (what transformers' save_pretrained
// writes for DeepSeek-V3) reads as the model without MTP (mtp_num_layers 0), with a warning on
// stderr naming the missing tensors; a folder holding only some of them is an error naming the
// missing ones.
nn::ModelConfig read_model_config(const std::string& dir, CheckpointFormat format);
// The HF names of `config`'s MTP layers (non-optional copies included) that `source` lacks;
// *none_present (if given) says whether it holds none of them.
std::vector<std::string> missing_mtp_tensors(const nn::ModelConfig& config,
                                             const TensorSource& source, bool* none_present);
// The FP8 block size of the folder's weights, or nullopt when they are not block-scaled FP8
// (HF: config.json's quantization_config; moecore: quantization_config.json).
std::optional<Fp8BlockSize> read_fp8_block_size(const std::string& dir, CheckpointFormat format);

// A Hugging Face folder (config.json + safetensors) or a moecore folder (model_config.json +
// safetensors): builds the GPTModel (dtype f64/f32 on CPU, f32/bf16 on CUDA) and fills every
// parameter and buffer. `adjust` (may be empty) edits the config before the model is built.
// FP8 weights are dequantized (in f32, then cast to the parameter's dtype). Errors name the
// tensor and the file: missing, unexpected, wrong shape, a dtype that is not a float, and
// NaN or Inf values (every tensor is checked on the host, in one pass, before it is uploaded:
// a non-finite weight would only show as a NaN loss). MTP layers of the
// checkpoint beyond the (adjusted) config's mtp_num_layers are skipped (transformers itself
// does not load DeepSeek-V3's MTP layer); MTP layers the adjusted config adds beyond the
// folder's keep their initialisation (a note on stderr says so).
std::unique_ptr<nn::GPTModel> load_model(const std::string& dir, DType dtype, Device device,
                                         const std::function<void(nn::ModelConfig&)>& adjust = {});

// Fills an existing model from a folder written for `file_config` (the config in the folder;
// `model.config()` may differ from it only in what does not change tensor shapes, in the number
// of MTP layers, and in its parallel mapping). MTP layers beyond the file's keep the model's
// initialisation (a note on stderr).
//
// A model built for expert parallelism (nn::MoEGroups of EP or ETP size > 1) holds only a box
// of each stacked expert tensor (nn::ParamLayout): each such parameter is filled with its box
// alone, reading only the HF tensors of the box's experts, and of them only the rows that hold
// the ETP slice (a moecore folder: only the box's experts of the mapped stacked tensor);
// box_load.h. A model built for tensor parallelism (nn::ModelGroups::tp) holds boxes of the
// dense tensors it splits, read the same way: of a column-parallel one (q/k/v_proj, MLA's
// q_b_proj / kv_b_proj, gate/up_proj of dense MLPs and shared experts, embed_tokens, lm_head)
// only its rows, of a row-parallel one (o_proj, down_proj) every row, cut to its columns.
// Every check above applies to what is read. A parameter that holds its whole tensor
// (replicated ones; every one of a one-rank model) is read whole.
void load_weights(nn::GPTModel& model, const std::string& dir, CheckpointFormat format,
                  const nn::ModelConfig& file_config);
// The same from any tensor source (`dir`'s is a CheckpointTensorSource over its safetensors)
// with the folder's FP8 block size (read_fp8_block_size).
void load_weights(nn::GPTModel& model, const TensorSource& source, CheckpointFormat format,
                  const nn::ModelConfig& file_config, std::optional<Fp8BlockSize> block);

struct SaveOptions {
  uint64_t max_shard_bytes = 5'000'000'000;  // transformers' default "5GB"
  bool overwrite = true;  // replace an existing model folder (atomically)
};

// Writes `model` as a moecore folder (parameters and buffers in their dtypes), atomically:
// a temporary folder next to `dir` is filled and then takes its place (atomic_folder.h).
void save_model(const std::string& dir, nn::GPTModel& model, const SaveOptions& options = {});

}  // namespace moe::checkpoint
