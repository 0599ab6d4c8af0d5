// Streamed folder conversion (checkpoint_convert.h).
#include "moe/checkpoint/checkpoint_convert.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "moe/checkpoint/atomic_folder.h"
#include "moe/checkpoint/convert.h"
#include "moe/checkpoint/hf_config_export.h"
#include "moe/checkpoint/hf_names.h"
#include "moe/checkpoint/shard_writer.h"
#include "moe/checkpoint/sharded_tensor_source.h"
#include "moe/checkpoint/tensor_source.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/io/atomic_file.h"
#include "moe/nn/model_config_json.h"

namespace moe::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string>& passthrough_files() {
  static const std::vector<std::string> files{
      "tokenizer.json",   "tokenizer_config.json", "tokenizer.model",   "special_tokens_map.json",
      "vocab.json",       "merges.txt",            "added_tokens.json", "generation_config.json"};
  return files;
}

namespace {

void write_json_file(const fs::path& path, const json& j) {
  io::write_file_atomically(path.string(), j.dump(2) + "\n");
}

void copy_passthrough(const std::string& src, const std::string& dst, ConvertSummary& summary) {
  for (const std::string& name : passthrough_files()) {
    const fs::path from = fs::path(src) / name;
    if (!fs::is_regular_file(from)) continue;
    std::ifstream in(from, std::ios::binary);
    MOE_CHECK(in.good(), "cannot read ", from.string());
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    io::write_file_atomically((fs::path(dst) / name).string(), bytes);
    summary.copied.push_back(name);
  }
}

}  // namespace

ConvertSummary convert_checkpoint(const std::string& src, const std::string& dst,
                                  const ConvertCheckpointOptions& options) {
  MOE_CHECK(options.from != options.to, "moe convert: --from and --to are both ",
            format_name(options.from), "; nothing to convert");
  MOE_CHECK(options.dtype == DType::bf16 || options.dtype == DType::f32 ||
                options.dtype == DType::f16,
            "moe convert: --dtype ", options.dtype, " is not one of bf16, f32, f16");
  const CheckpointFormat found = detect_format(src);
  MOE_CHECK(found == options.from, "moe convert: ", src, " is a ", format_name(found),
            " folder, not ", format_name(options.from), " (--from ", format_name(options.from),
            ")");
  MOE_CHECK(fs::absolute(src).lexically_normal() != fs::absolute(dst).lexically_normal(),
            "moe convert: the output folder is the input folder ", src);
  ConvertSummary summary;
  const auto say = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  const auto note = [&](const std::string& line) {
    summary.notes.push_back(line);
    say("note: " + line);
  };

  summary.config = read_model_config(src, options.from);
  const nn::ModelConfig& config = summary.config;
  const std::optional<Fp8BlockSize> block = read_fp8_block_size(src, options.from);
  // A moecore folder may be a sharded training checkpoint: its tensors are then assembled from
  // the ranks' slices, one at a time (sharded_tensor_source.h).
  const std::unique_ptr<TensorSource> opened = open_model_tensors(src, options.from);
  const TensorSource& source = *opened;
  summary.tensors_read = static_cast<int64_t>(source.names().size());
  const std::vector<UnitMapping> units = hf_model_mapping(config);

  AtomicFolder folder(dst, options.overwrite);
  const bool to_hf = options.to == CheckpointFormat::hf;
  ShardWriter writer(folder.path(), options.max_shard_bytes, {{"format", "pt"}});
  const TensorSink sink = [&](const std::string& name, Tensor t) { writer.add(name, t); };
  ConvertOptions convert;
  convert.block = block.value_or(Fp8BlockSize{});
  convert.dequantize = !options.keep_fp8;
  convert.dequantized_dtype = options.dtype;
  bool noted_cut = false;
  convert.note = [&](const std::string& line) {
    if (!noted_cut) note(line + " (said once; other fused FP8 tensors of this shape likewise)");
    noted_cut = true;
  };

  say(std::string("converting ") + src + " (" + format_name(options.from) + ", model " +
      config.name + ", family " + config.family + ") to " + dst + " (" +
      format_name(options.to) + ")");
  if (to_hf) {
    check_moecore_names(config, units, source);
    MOE_CHECK(source.contains("model.embed_tokens.weight"), "missing tensor ",
              "model.embed_tokens.weight in ", source.description());
    json hf_config =
        to_hf_config(config, source.info("model.embed_tokens.weight").dtype, &summary.notes);
    for (const std::string& line : summary.notes) say("note: " + line);
    if (block)
      hf_config["quantization_config"] =
          read_json_file((fs::path(src) / "quantization_config.json").string(), "quantization config");
    for (const UnitMapping& unit : units) {
      unit_moecore_to_hf(unit, source, convert, sink);
      say("  " + unit.what);
    }
    write_json_file(fs::path(folder.path()) / "config.json", hf_config);
  } else {
    check_hf_names(config, units, source);
    if (options.keep_fp8 && !block)
      note("--keep-fp8: " + src + " has no FP8 quantization_config; nothing to keep");
    for (const UnitMapping& unit : units) {
      unit_hf_to_moecore(unit, source, convert, sink);
      say("  " + unit.what);
    }
    write_json_file(fs::path(folder.path()) / "model_config.json",
                    nn::model_config_to_json(config));
    if (block && options.keep_fp8) {
      const json hf_config = read_json_file((fs::path(src) / "config.json").string(), "Hugging Face config");
      write_json_file(fs::path(folder.path()) / "quantization_config.json",
                      hf_config.at("quantization_config"));
    }
  }
  const io::ShardedWriteResult written = writer.finish();
  summary.files = written.files;
  summary.bytes_written = written.total_size;
  summary.tensors_written = writer.tensor_count();
  copy_passthrough(src, folder.path(), summary);
  folder.commit();
  say("wrote " + std::to_string(summary.tensors_written) + " tensors (" +
      std::to_string(summary.bytes_written) + " bytes) in " + std::to_string(summary.files.size()) +
      " file(s) to " + folder.target());
  return summary;
}

}  // namespace moe::checkpoint
