#include "generate_cmd.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "moe/checkpoint/model_io.h"
#include "moe/core/error.h"
#include "moe/data/byte_tokenizer.h"
#include "moe/data/tokenizer.h"
#include "moe/train/model_folder.h"

namespace moe::app {

CLI::App* add_generate_command(CLI::App& app, GenerateCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "continue a prompt: greedy (--temperature 0) or sampled (temperature, top-k, top-p), "
      "with the model folder's tokenizer.json, --tokenizer-model, or byte tokens; no KV cache "
      "yet, each token recomputes the window");
  cmd->add_option("--load", o.load,
                  "model folder (model_config.json or config.json), or a training --save "
                  "folder (its latest_checkpointed_iteration.txt picks iter_NNNNNNN)")
      ->required();
  cmd->add_option("--prompt", o.prompt, "the text to continue (empty: a new document)");
  cmd->add_option("--tokenizer-type", o.tokenizer_type,
                  "HuggingFaceTokenizer, SentencePieceTokenizer, Llama2Tokenizer or byte")
      ->check(CLI::IsMember(
          {"HuggingFaceTokenizer", "SentencePieceTokenizer", "Llama2Tokenizer", "byte"}));
  cmd->add_option("--tokenizer-model", o.tokenizer_model,
                  "tokenizer.json (or its folder); default: the model folder's, else byte tokens");
  cmd->add_option("--max-new-tokens", o.generate.max_new_tokens, "tokens to generate")
      ->capture_default_str();
  cmd->add_option("--temperature", o.generate.sampling.temperature,
                  "softmax temperature; 0 is greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", o.generate.sampling.top_k, "sample among the k likeliest; 0: all")
      ->capture_default_str();
  cmd->add_option("--top-p", o.generate.sampling.top_p,
                  "nucleus: the likeliest ids up to this total probability; 1: all")
      ->capture_default_str();
  cmd->add_option("--seed", o.generate.seed, "random seed of the sampler")->capture_default_str();
  cmd->add_option("--seq-length", o.generate.max_sequence_length,
                  "longest window given to the model; 0: its max_position_embeddings")
      ->capture_default_str();
  cmd->add_option("--dtype", o.dtype, "f32 (CPU default), bf16 (GPU default; GPU only), f64 (CPU)")
      ->check(CLI::IsMember({"f32", "bf16", "f64"}));
  cmd->add_flag("--cpu", o.cpu, "run on the CPU even when a GPU is present");
  return cmd;
}

int run_generate(const GenerateCommandOptions& o, bool force_cpu) {
  train::check_sampling_options(o.generate.sampling);  // before minutes of loading
  const bool gpu = !(o.cpu || force_cpu) && cuda_device_count() > 0;
  const Device device = gpu ? Device::cuda(0) : Device::cpu();
  const std::string dtype_text = o.dtype.empty() ? (gpu ? "bf16" : "f32") : o.dtype;
  const DType dtype = dtype_text == "bf16"  ? DType::bf16
                      : dtype_text == "f64" ? DType::f64
                                            : DType::f32;
  MOE_CHECK(gpu || dtype != DType::bf16,
            "moe generate: --dtype bf16 runs on a GPU; on the CPU use f32 or f64");
  MOE_CHECK(!gpu || dtype != DType::f64, "moe generate: --dtype f64 runs on the CPU (add --cpu)");

  const std::string folder = train::resolve_model_folder(o.load);
  const checkpoint::CheckpointFormat format = checkpoint::detect_format(folder);
  const nn::ModelConfig config = checkpoint::read_model_config(folder, format);
  // The tokenizer, checked before minutes of loading: --tokenizer-*, else the folder's own
  // tokenizer.json, else byte tokens (the default run's models).
  std::string tokenizer_model = o.tokenizer_model;
  if (o.tokenizer_type.empty() && tokenizer_model.empty() &&
      std::filesystem::is_regular_file(std::filesystem::path(folder) / "tokenizer.json"))
    tokenizer_model = folder;
  const std::unique_ptr<data::Tokenizer> tokenizer =
      data::make_tokenizer(o.tokenizer_type, tokenizer_model);
  if (tokenizer->description() == "byte") {
    const auto others = train::tokenizer_files(folder);
    MOE_CHECK(others.empty() && data::ByteTokenizer::fits_model_vocab(config.vocab_size),
              "moe generate: model ", config.name, " in ", folder, " has a vocabulary of ",
              config.vocab_size, " ids",
              others.empty() ? "" : (" and its own tokenizer files (" + others.front() + ")"),
              ", not byte tokens: give its tokenizer.json with --tokenizer-model");
  }
  MOE_CHECK(config.vocab_size >= tokenizer->vocab_size(), "moe generate: model ", config.name,
            " has ", config.vocab_size, " vocabulary ids, fewer than the ",
            tokenizer->vocab_size(), " of ", tokenizer->description());

  MOE_CHECK(o.generate.max_sequence_length >= 0 &&
                o.generate.max_sequence_length <= config.max_position_embeddings,
            "moe generate: --seq-length ", o.generate.max_sequence_length, " must be in 1..",
            config.max_position_embeddings,
            " (the model's max_position_embeddings), or 0 for that");

  auto model = checkpoint::load_model(folder, dtype, device);
  const train::SamplingOptions& s = o.generate.sampling;
  const bool greedy = s.temperature == 0.0 || s.top_k == 1;
  std::printf("model %s from %s on %s in %s; tokenizer %s; ", config.name.c_str(),
              folder.c_str(), device.str().c_str(), dtype_name(dtype),
              tokenizer->description().c_str());
  if (greedy)
    std::printf("greedy\n");
  else
    std::printf("temperature %g, top-k %lld, top-p %g, seed %llu\n", s.temperature,
                static_cast<long long>(s.top_k), s.top_p,
                static_cast<unsigned long long>(o.generate.seed));
  const std::string text = train::generate_text(*model, *tokenizer, o.prompt, o.generate);
  std::printf("----\n%s%s\n----\n", o.prompt.c_str(), text.c_str());
  return 0;
}

}  // namespace moe::app
