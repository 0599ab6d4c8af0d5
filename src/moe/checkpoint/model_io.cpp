// Model folders: format detection, load_model, save_model (model_io.h).
#include "moe/checkpoint/model_io.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "moe/checkpoint/atomic_folder.h"
#include "moe/checkpoint/convert.h"
#include "moe/checkpoint/hf_names.h"
#include "moe/checkpoint/shard_writer.h"
#include "moe/checkpoint/tensor_source.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/io/atomic_file.h"
#include "moe/nn/hf_config.h"
#include "moe/nn/model_config_json.h"

namespace moe::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The first element of a CPU float tensor that is NaN or +-Inf, by its bits (exponent all
// ones), in one pass and for every float dtype alike; -1 when every element is finite.
template <class Bits>
int64_t first_non_finite_bits(const Tensor& t, Bits exponent_mask) {
  const auto* data = static_cast<const unsigned char*>(t.raw());
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    Bits bits;
    std::memcpy(&bits, data + i * static_cast<int64_t>(sizeof(Bits)), sizeof(Bits));
    if ((bits & exponent_mask) == exponent_mask) return i;
  }
  return -1;
}

int64_t first_non_finite(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f64:
      return first_non_finite_bits<uint64_t>(t, 0x7ff0000000000000ull);
    case DType::f32:
      return first_non_finite_bits<uint32_t>(t, 0x7f800000u);
    case DType::bf16:
      return first_non_finite_bits<uint16_t>(t, 0x7f80u);
    case DType::f16:
      return first_non_finite_bits<uint16_t>(t, 0x7c00u);
    case DType::fp8_e5m2:
      return first_non_finite_bits<uint8_t>(t, 0x7cu);
    case DType::fp8_e4m3:
      return first_non_finite_bits<uint8_t>(t, 0x7fu);  // NaN only
    default:
      return -1;
  }
}

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

nn::ModelConfig read_model_config(const std::string& dir, CheckpointFormat format) {
  if (format == CheckpointFormat::hf) return nn::from_hf_config_file(dir);
  return nn::load_model_config((fs::path(dir) / "model_config.json").string());
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
  // Where each checkpoint tensor goes.
  std::map<std::string, Tensor*> targets;
  for (nn::Parameter* p : model.parameters()) targets[p->name] = &p->value;
  for (const nn::NamedBuffer& b : model.buffers()) targets[b.name] = b.value;
  std::set<std::string> filled;

  const CheckpointTensorSource source(dir);
  const std::vector<UnitMapping> units = hf_model_mapping(file_config);
  std::map<std::string, const TensorMapping*> mappings;
  for (const UnitMapping& unit : units)
    for (const TensorMapping& m : unit.tensors) mappings[m.name] = &m;
  if (format == CheckpointFormat::hf)
    check_hf_names(file_config, units, source);
  else
    check_moecore_names(file_config, units, source);

  // `t` is on the host: the checks below read it there, once, before it is uploaded.
  const auto assign = [&](const std::string& name, const Tensor& t) {
    auto it = targets.find(name);
    MOE_CHECK(it != targets.end(), "tensor ", name, " of ", source.description(),
              " has no place in the model ", model.config().name,
              " (was the config adjusted in a way that changes its tensors?)");
    Tensor& target = *it->second;
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

  const std::optional<Fp8BlockSize> block = read_fp8_block_size(dir, format);
  const int64_t kept_layers = file_config.num_layers + model.config().mtp_num_layers;
  for (const UnitMapping& unit : units) {
    if (unit.mtp && unit.layer >= kept_layers) continue;  // MTP layers the model leaves out
    if (format == CheckpointFormat::hf) {
      ConvertOptions options;
      options.dequantize = true;
      options.dequantized_dtype = DType::f32;
      options.block = block.value_or(Fp8BlockSize{});
      unit_hf_to_moecore(unit, source, options, assign);
    } else {
      for (const TensorMapping& m : unit.tensors)
        assign(m.name, load_moecore_tensor(m, source, block.value_or(Fp8BlockSize{}), DType::f32));
    }
  }
  for (const auto& [name, tensor] : targets)
    MOE_CHECK(filled.count(name), "model parameter ", name, " ", shape_str(tensor->shape()),
              " was not found in ", source.description());
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
