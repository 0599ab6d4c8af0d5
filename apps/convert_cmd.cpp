#include "convert_cmd.h"

#include <cstdio>

#include "moe/checkpoint/checkpoint_convert.h"
#include "moe/checkpoint/shard_writer.h"

namespace moe::app {

CLI::App* add_convert_command(CLI::App& app, ConvertCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "convert",
      "convert a model folder between the Hugging Face layout (config.json + safetensors, "
      "per-expert tensors) and moecore's (model_config.json + safetensors, fused experts)");
  cmd->add_option("--from", o.from, "format of <src>: hf or moecore")
      ->required()
      ->check(CLI::IsMember({"hf", "moecore"}));
  cmd->add_option("--to", o.to, "format of <dst>: moecore or hf")
      ->required()
      ->check(CLI::IsMember({"hf", "moecore"}));
  cmd->add_option("src", o.src, "input model folder")->required();
  cmd->add_option("dst", o.dst, "output model folder (written atomically)")->required();
  cmd->add_option("--dtype", o.dtype,
                  "hf -> moecore: dtype of dequantized FP8 weights (bf16 default, f32); other "
                  "weights keep their dtype")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_flag("--keep-fp8", o.keep_fp8,
                "hf -> moecore: keep FP8 weights and their block scales (config.json's weight_block_size) as they are "
                "(fused like the weights), so that converting back gives identical tensors");
  cmd->add_option("--max-shard-size", o.max_shard_size,
                  "largest safetensors shard, as transformers' max_shard_size (5GB default)");
  cmd->add_flag("--force", o.force, "replace <dst> if it is an existing model folder");
  return cmd;
}

int run_convert(const ConvertCommandOptions& o) {
  checkpoint::ConvertCheckpointOptions options;
  options.from = checkpoint::parse_format(o.from);
  options.to = checkpoint::parse_format(o.to);
  options.keep_fp8 = o.keep_fp8;
  options.dtype = o.dtype == "f32" ? DType::f32 : DType::bf16;
  options.max_shard_bytes = checkpoint::parse_byte_size(o.max_shard_size);
  options.overwrite = o.force;
  options.log = [](const std::string& line) { std::printf("%s\n", line.c_str()); };
  const checkpoint::ConvertSummary summary = checkpoint::convert_checkpoint(o.src, o.dst, options);
  for (const std::string& file : summary.copied) std::printf("copied %s\n", file.c_str());
  return 0;
}

}  // namespace moe::app
