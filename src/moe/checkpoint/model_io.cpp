// Model folders: format detection, load_model, save_model (model_io.h).
#include "moe/checkpoint/model_io.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "moe/checkpoint/atomic_folder.h"
#include "moe/checkpoint/box_copy.h"
#include "moe/checkpoint/box_load.h"
#include "moe/checkpoint/convert.h"
#include "moe/checkpoint/hf_config_import.h"
#include "moe/checkpoint/hf_names.h"
#include "moe/checkpoint/shard_writer.h"
#include "moe/checkpoint/sharded_tensor_source.h"
#include "moe/checkpoint/tensor_source.h"
#include "moe/checkpoint/weight_checks.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/io/atomic_file.h"
#include "moe/nn/model_config_json.h"

namespace moe::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The Hugging Face tensor that holds element `element` of the fused moecore tensor `m`, and the
// element's index in it (parts concatenated experts-major, parts-minor: hf_names.h).
std::pair<std::string, int64_t> hf_part_at(const TensorMapping& m, int64_t element) {
  for (const auto& expert : m.hf_names)
    for (size_t p = 0; p < expert.size(); ++p) {
      int64_t n = 1;
      for (int64_t d : m.part_shapes[p]) n *= d;
      if (element < n) return {expert[p], element};
      element -= n;
    }
  return {m.name, element};
}

// Where a model tensor goes: a parameter (which may hold only a box of its tensor) or a buffer.
struct Target {
  Tensor* value = nullptr;
  const nn::Parameter* parameter = nullptr;

  // Whether the model holds only a box of the tensor (expert or tensor parallelism): then only
  // the box is read (box_load.h).
  bool boxed() const {
    return parameter && nn::box_shape_of(*parameter) != nn::view_shape_of(*parameter);
  }
  TensorBox box() const {
    return {nn::view_shape_of(*parameter), nn::box_offset_of(*parameter),
            nn::box_shape_of(*parameter)};
  }
};

}  // namespace

const char* format_name(CheckpointFormat format) {
  return format == CheckpointFormat::hf ? "hf" : "moecore";
}

CheckpointFormat parse_format(const std::string& name) {
  if (name == "hf") return CheckpointFormat::hf;
  if (name == "moecore") return CheckpointFormat::moecore;
  MOE_FAIL("checkpoint format \"", name, "\" is not one of hf, moecore");
}

CheckpointFormat detect_format(const std::string& dir) {
  MOE_CHECK(fs::is_directory(dir), "model folder ", dir, " does not exist or is not a folder");
  const bool moecore = fs::exists(fs::path(dir) / "model_config.json");
  const bool hf = fs::exists(fs::path(dir) / "config.json");
  MOE_CHECK(!(moecore && hf), "model folder ", dir, " holds both model_config.json (moecore) and ",
            "config.json (Hugging Face); remove the one that does not describe its weights");
  MOE_CHECK(moecore || hf, "model folder ", dir, " holds neither config.json (a Hugging Face ",
            "model) nor model_config.json (a moecore model)");
  return moecore ? CheckpointFormat::moecore : CheckpointFormat::hf;
}

std::vector<std::string> missing_mtp_tensors(const nn::ModelConfig& config,
                                             const TensorSource& source, bool* none_present) {
  std::vector<std::string> missing;
  bool any = false;
  for (const UnitMapping& unit : hf_model_mapping(config)) {
    if (!unit.mtp) continue;
    std::vector<std::string> names;
    for (const TensorMapping& m : unit.tensors)
      for (const auto& expert : m.hf_names) names.insert(names.end(), expert.begin(), expert.end());
    for (const HfCopy& c : unit.copies)
      if (!c.optional) names.push_back(c.hf_name);
    for (const std::string& name : names) {
      if (source.contains(name))
        any = true;
      else
        missing.push_back(name);
    }
  }
  if (none_present) *none_present = !any;
  return missing;
}

nn::ModelConfig read_model_config(const std::string& dir, CheckpointFormat format) {
  if (format == CheckpointFormat::moecore)
    return nn::load_model_config((fs::path(dir) / "model_config.json").string());
  nn::ModelConfig config = from_hf_config_file(dir);
  if (config.mtp_num_layers == 0) return config;
  // transformers has no MTP module: a DeepSeek-V3 model it saved keeps
  // num_nextn_predict_layers in config.json but writes none of the MTP weights. Such a folder
  // is the model without MTP; a folder with only some of them is damaged.
  const std::unique_ptr<TensorSource> source = open_model_tensors(dir, format);
  bool none_present = false;
  const std::vector<std::string> missing = missing_mtp_tensors(config, *source, &none_present);
  if (missing.empty()) return config;
  std::string list;
  for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
  if (missing.size() > 5) list += ", ... (" + std::to_string(missing.size()) + " in all)";
  MOE_CHECK(none_present, source->description(), " holds some of the ", config.mtp_num_layers,
            " MTP layers' tensors that config.json's num_nextn_predict_layers announces, but ",
            missing.size(), " are missing: ", list);
  std::fprintf(stderr,
               "warning: %s: config.json says num_nextn_predict_layers %lld, but the folder "
               "holds none of the MTP tensors (%s); loading the model without MTP "
               "(mtp_num_layers 0)\n",
               dir.c_str(), static_cast<long long>(config.mtp_num_layers), list.c_str());
  config.mtp_num_layers = 0;
  return config;
}

std::optional<Fp8BlockSize> read_fp8_block_size(const std::string& dir, CheckpointFormat format) {
  if (format == CheckpointFormat::hf) {
    const fs::path path = fs::path(dir) / "config.json";
    const json config = read_json_file(path.string(), "Hugging Face config");
    const auto it = config.find("quantization_config");
    if (it == config.end()) return std::nullopt;
    try {
      return fp8_block_size_of(*it);
    } catch (const Error& e) {
      MOE_FAIL(path.string(), ": ", e.what());
    }
  }
  const fs::path path = fs::path(dir) / "quantization_config.json";
  if (!fs::exists(path)) return std::nullopt;
  try {
    return fp8_block_size_of(read_json_file(path.string(), "quantization config"));
  } catch (const Error& e) {
    MOE_FAIL(path.string(), ": ", e.what());
  }
}

void load_weights(nn::GPTModel& model, const std::string& dir, CheckpointFormat format,
                  const nn::ModelConfig& file_config) {
  const std::unique_ptr<TensorSource> source = open_model_tensors(dir, format);
  load_weights(model, *source, format, file_config, read_fp8_block_size(dir, format));
}

void load_weights(nn::GPTModel& model, const TensorSource& source, CheckpointFormat format,
                  const nn::ModelConfig& file_config, std::optional<Fp8BlockSize> block) {
  // Where each checkpoint tensor goes.
  std::map<std::string, Target> targets;
  for (nn::Parameter* p : model.parameters()) targets[p->name] = {&p->value, p};
  for (const nn::NamedBuffer& b : model.buffers()) targets[b.name] = {b.value, nullptr};
  std::set<std::string> filled;

  const std::vector<UnitMapping> units = hf_model_mapping(file_config);
  std::map<std::string, const TensorMapping*> mappings;
  for (const UnitMapping& unit : units)
    for (const TensorMapping& m : unit.tensors) mappings[m.name] = &m;
  if (format == CheckpointFormat::hf)
    check_hf_names(file_config, units, source);
  else
    check_moecore_names(file_config, units, source);

  const auto target_of = [&](const std::string& name) -> const Target& {
    auto it = targets.find(name);
    MOE_CHECK(it != targets.end(), "tensor ", name, " of ", source.description(),
              " has no place in the model ", model.config().name,
              " (was the config adjusted in a way that changes its tensors?)");
    return it->second;
  };
  // A whole tensor. `t` is on the host: the checks below read it there, once, before it is
  // uploaded.
  const auto assign = [&](const std::string& name, const Tensor& t) {
    Tensor& target = *target_of(name).value;
    MOE_CHECK(target.shape() == t.shape(), "tensor ", name, " of ", source.description(),
              " has shape ", shape_str(t.shape()), ", the model's is ", shape_str(target.shape()));
    // Every parameter and buffer is a float: an integer tensor would be cast silently.
    MOE_CHECK(is_floating(t.dtype()), "tensor ", name, " in ", source.where(name), " is ",
              t.dtype(), "; model weights must be a float dtype (f64, f32, bf16, f16 or FP8)");
    // A NaN or Inf weight makes every loss NaN: refused here, naming the first such tensor
    // (for a tensor fused from Hugging Face parts, the part).
    if (const int64_t bad = first_non_finite(t); bad >= 0) {
      std::pair<std::string, int64_t> at{name, bad};
      const auto m = mappings.find(name);
      if (format == CheckpointFormat::hf && m != mappings.end() && !m->second->identity())
        at = hf_part_at(*m->second, bad);
      MOE_FAIL("tensor ", at.first, at.first == name ? "" : " (fused into moecore " + name + ")",
               " in ", source.where(at.first), " holds a non-finite value (NaN or Inf) at element ",
               at.second, "; the checkpoint's weights must be finite");
    }
    target.copy_(t.dtype() == target.dtype() ? t : t.to(target.dtype()));
    filled.insert(name);
  };
  // A box of a tensor: read_*_box has checked what it read (dtype, finite values).
  const auto assign_box = [&](const TensorMapping& m) {
    const Target& target = target_of(m.name);
    const Shape global = nn::global_shape_of(*target.parameter);
    MOE_CHECK(global == m.shape, "tensor ", m.name, " of ", source.description(), " has shape ",
              shape_str(m.shape), ", the model's is ", shape_str(global), " (of which it holds ",
              box_str(Box{target.box().offset, target.box().shape}), " of the view ",
              shape_str(target.box().view), ")");
    const Tensor t =
        format == CheckpointFormat::hf
            ? read_hf_box(m, source, target.box(), block.value_or(Fp8BlockSize{}), DType::f32)
            : read_moecore_box(m, source, target.box(), block.value_or(Fp8BlockSize{}), DType::f32);
    Tensor& value = *target.value;
    const Tensor shaped = t.reshape(value.shape());
    value.copy_(shaped.dtype() == value.dtype() ? shaped : shaped.to(value.dtype()));
    filled.insert(m.name);
  };

  const int64_t kept_layers = file_config.num_layers + model.config().mtp_num_layers;
  for (const UnitMapping& unit : units) {
    if (unit.mtp && unit.layer >= kept_layers) continue;  // MTP layers the model leaves out
    // A pipeline rank's model holds its stages' tensors: the units of other stages are not read.
    if (!model.is_whole() &&
        std::none_of(unit.tensors.begin(), unit.tensors.end(),
                     [&](const TensorMapping& m) { return targets.count(m.name) > 0; }))
      continue;
    // The tensors the model holds whole are read whole, as one-rank models read them all.
    UnitMapping whole = unit;
    whole.tensors.clear();
    std::vector<const TensorMapping*> boxed;
    for (const TensorMapping& m : unit.tensors) {
      const auto it = targets.find(m.name);
      if (it != targets.end() && it->second.boxed())
        boxed.push_back(&m);
      else
        whole.tensors.push_back(m);
    }
    if (format == CheckpointFormat::hf) {
      ConvertOptions options;
      options.dequantize = true;
      options.dequantized_dtype = DType::f32;
      options.block = block.value_or(Fp8BlockSize{});
      unit_hf_to_moecore(whole, source, options, assign);
    } else {
      for (const TensorMapping& m : whole.tensors)
        assign(m.name, load_moecore_tensor(m, source, block.value_or(Fp8BlockSize{}), DType::f32));
    }
    for (const TensorMapping* m : boxed) assign_box(*m);
  }
  // MTP layers that the model has and the file lacks (a Hugging Face folder saved without its
  // MTP weights, trained with --mtp-num-layers) keep their initialisation, as a new model's.
  std::set<std::string> fresh;
  for (int64_t l = file_config.num_layers + file_config.mtp_num_layers;
       l < model.config().num_layers + model.config().mtp_num_layers; ++l)
    for (const TensorMapping& m : hf_layer_mapping(model.config(), l).tensors) fresh.insert(m.name);
  size_t fresh_count = 0;
  for (const auto& [name, target] : targets) {
    if (filled.count(name)) continue;
    MOE_CHECK(fresh.count(name), "model parameter ", name, " ", shape_str(target.value->shape()),
              " was not found in ", source.description());
    ++fresh_count;
  }
  if (fresh_count > 0)
    std::fprintf(stderr,
                 "note: %s holds %lld MTP layer(s), the model %lld: the other MTP layers (%zu "
                 "tensors) start from a new model's initialisation\n",
                 source.description().c_str(), static_cast<long long>(file_config.mtp_num_layers),
                 static_cast<long long>(model.config().mtp_num_layers), fresh_count);
}

std::unique_ptr<nn::GPTModel> load_model(const std::string& dir, DType dtype, Device device,
                                         const std::function<void(nn::ModelConfig&)>& adjust) {
  const CheckpointFormat format = detect_format(dir);
  const nn::ModelConfig file_config = read_model_config(dir, format);
  nn::ModelConfig config = file_config;
  if (adjust) {
    adjust(config);
    config.moe.hidden_size = config.hidden_size;
    config.validate();
  }
  auto model = std::make_unique<nn::GPTModel>(config, dtype, device);
  load_weights(*model, dir, format, file_config);
  return model;
}

void save_model(const std::string& dir, nn::GPTModel& model, const SaveOptions& options) {
  // The folder must have exactly the tensors of the moecore layout of its config (a model
  // holding only its expert-parallel share of the experts cannot be saved this way).
  std::map<std::string, Shape> layout;
  for (const UnitMapping& unit : hf_model_mapping(model.config()))
    for (const TensorMapping& m : unit.tensors) layout[m.name] = m.shape;
  size_t count = 0;
  const auto check = [&](const std::string& name, const Tensor& t) {
    auto it = layout.find(name);
    MOE_CHECK(it != layout.end(), "save_model: the model's tensor ", name,
              " is not part of the moecore layout of its config");
    MOE_CHECK(it->second == t.shape(), "save_model: the model's tensor ", name, " has shape ",
              shape_str(t.shape()), ", the moecore layout ", shape_str(it->second),
              " (is it an expert-parallel shard?)");
    ++count;
  };
  for (nn::Parameter* p : model.parameters()) check(p->name, p->value);
  for (const nn::NamedBuffer& b : model.buffers()) check(b.name, *b.value);
  MOE_CHECK(count == layout.size(), "save_model: the model has ", count, " tensors, its config's ",
            "moecore layout ", layout.size());

  AtomicFolder folder(dir, options.overwrite);
  ShardWriter writer(folder.path(), options.max_shard_bytes, {{"format", "pt"}});
  for (nn::Parameter* p : model.parameters()) writer.add(p->name, p->value);
  for (const nn::NamedBuffer& b : model.buffers()) writer.add(b.name, *b.value);
  writer.finish();
  io::write_file_atomically((fs::path(folder.path()) / "model_config.json").string(),
                            nn::model_config_to_json(model.config()).dump(2) + "\n");
  folder.commit();
}

}  // namespace moe::checkpoint
