// Hugging Face <-> moecore tensors, one unit (embedding, layer, MTP layer, head) at a time, with
// the names of hf_names.h and the FP8 block scales of fp8_blocks.h.
//
// HF -> moecore: the parts of each moecore tensor are checked (present, shape, one dtype) and
// concatenated; HF's MTP copies of the embedding and output head are checked to equal the
// main ones and dropped. FP8 parts (weight fp8 + <name>_scale_inv) are dequantized to
// `dequantized_dtype` (dequantize), or kept: the fused tensor stays fp8 and its scales are
// fused the same way, <moecore name>_scale_inv = the parts' scales concatenated along dim 0
// (stacked [E, ...] for experts). That is the plain block grid of the fused tensor when each
// part's row count is a multiple of the block rows; otherwise (say gate/up of F = 1407 rows)
// the grid restarts at every part, and `note` is told so. moecore readers (load_model,
// load_moecore_tensor) always use the per-part grid.
// moecore -> HF: the inverse (byte slices), re-creating the MTP copies from the originals.
// The two are exact inverses for every dtype: HF -> moecore -> HF returns identical tensors
// (names, dtypes, shapes, bytes) whenever FP8 is kept.
//
// Errors name the tensor and its file: a missing tensor (and the moecore tensor that needs
// it), a wrong shape (found and expected), a dtype that is not a float (model weights are
// f64, f32, bf16, f16 or FP8; an integer tensor is refused, not cast), parts of different dtypes,
// an FP8 weight without its scales or scales without an FP8 weight, MTP copies that differ from the
// originals, and (check_*_names) tensors the model does not have.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moe/checkpoint/fp8_blocks.h"
#include "moe/checkpoint/hf_names.h"
#include "moe/checkpoint/tensor_source.h"
#include "moe/nn/model_config.h"

namespace moe::checkpoint {

struct ConvertOptions {
  bool dequantize = true;                 // HF -> moecore: FP8 weights -> dequantized_dtype
  DType dequantized_dtype = DType::bf16;  // f32, bf16, f16 or f64
  Fp8BlockSize block;                     // quantization_config.weight_block_size
  std::function<void(const std::string&)> note;  // remarks for the user (may be empty)
};

using TensorSink = std::function<void(const std::string& name, Tensor tensor)>;

inline bool is_fp8(DType dtype) { return dtype == DType::fp8_e4m3 || dtype == DType::fp8_e5m2; }

// Every tensor of `source` must be named in `units` (HF side: the parts and the MTP copies;
// moecore side: the moecore names), or be the <name>_scale_inv of such a tensor. Otherwise an
// error names the first unexpected tensors, their file and the model.
void check_hf_names(const nn::ModelConfig& config, const std::vector<UnitMapping>& units,
                    const TensorSource& hf);
void check_moecore_names(const nn::ModelConfig& config, const std::vector<UnitMapping>& units,
                         const TensorSource& moecore);

// One unit; `sink` receives each produced tensor (CPU), in the unit's order, a kept FP8
// tensor followed by its scales.
void unit_hf_to_moecore(const UnitMapping& unit, const TensorSource& hf,
                        const ConvertOptions& options, const TensorSink& sink);
void unit_moecore_to_hf(const UnitMapping& unit, const TensorSource& moecore,
                        const ConvertOptions& options, const TensorSink& sink);

// One moecore tensor from a moecore source, checked against the mapping's shape; FP8 with
// per-part block scales is dequantized to `dequantized_dtype`, other dtypes are returned as
// stored.
Tensor load_moecore_tensor(const TensorMapping& mapping, const TensorSource& moecore,
                           Fp8BlockSize block, DType dequantized_dtype);
// Rows [begin, end) of dim 0 of the same (for a stacked tensor: experts [begin, end)), with the
// same checks of the whole tensor's metadata; only those rows (and their scales) are read.
Tensor load_moecore_rows(const TensorMapping& mapping, const TensorSource& moecore,
                         Fp8BlockSize block, DType dequantized_dtype, int64_t begin, int64_t end);

// The checks of a moecore tensor before it is read (present, a float dtype, the mapping's
// shape; block scales of the fused shape for FP8, none otherwise); returns its dtype.
DType check_moecore_tensor(const TensorMapping& mapping, const TensorSource& moecore,
                           Fp8BlockSize block);

// The dtype the HF parts of one fused tensor share, and the part that set it (for messages).
struct FusedDType {
  std::optional<DType> dtype;
  std::string first_part;
};
// The checks of HF part `part` of expert `expert` of `mapping` before it is read: present, a
// float dtype, the part's shape, the dtype of the parts checked before (`fused`, updated), and
// block scales of the block grid for FP8 (none otherwise). Returns its dtype.
DType check_hf_part(const TensorMapping& mapping, const TensorSource& hf, int64_t expert,
                    size_t part, Fp8BlockSize block, FusedDType& fused);

// The agreed map API (CPU tensors; whole models in memory, for tests and small models).
// hf_to_moecore dequantizes FP8 to `dequantized_dtype` when `dequantize`, else keeps it with
// its fused scales; 128 x 128 blocks.
std::map<std::string, Tensor> hf_to_moecore(const nn::ModelConfig& config,
                                            const std::map<std::string, Tensor>& hf_tensors,
                                            bool dequantize = true,
                                            DType dequantized_dtype = DType::bf16);
std::map<std::string, Tensor> moecore_to_hf(const nn::ModelConfig& config,
                                            const std::map<std::string, Tensor>& tensors);

}  // namespace moe::checkpoint
