#include "generate_cmd.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "moe/checkpoint/model_io.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/data/byte_tokenizer.h"
#include "moe/data/tokenizer.h"
#include "moe/train/model_folder.h"

namespace moe::app {
namespace {

namespace fs = std::filesystem;

// The sampling settings: the flags, else generation_config.json's, else the defaults.
train::GenerateOptions resolve_options(const GenerateCommandOptions& o, const std::string& folder,
                                       std::string& source) {
  train::GenerateOptions g = o.generate;
  const fs::path path = fs::path(folder) / "generation_config.json";
  nlohmann::json config = nlohmann::json::object();
  if (fs::is_regular_file(path)) {
    config = read_json_file(path.string(), "generation config");
    source = path.string();
    // transformers samples only with do_sample true; otherwise it is greedy.
    if (!config.value("do_sample", false)) g.sampling.temperature = 0.0;
  }
  const auto number = [&](const char* key) -> std::optional<double> {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) return std::nullopt;
    MOE_CHECK(it->is_number(), path.string(), ": ", key, " must be a number, got ", it->dump());
    return it->get<double>();
  };
  if (g.sampling.temperature != 0.0)
    if (const auto t = number("temperature")) g.sampling.temperature = *t;
  if (const auto k = number("top_k")) g.sampling.top_k = static_cast<int64_t>(*k);
  if (const auto p = number("top_p")) g.sampling.top_p = *p;
  if (const auto n = number("max_new_tokens")) g.max_new_tokens = static_cast<int64_t>(*n);
  if (const auto it = config.find("eos_token_id"); it != config.end() && !it->is_null()) {
    const nlohmann::json ids = it->is_array() ? *it : nlohmann::json::array({*it});
    for (const auto& id : ids) {
      MOE_CHECK(id.is_number_integer(), path.string(), ": eos_token_id must be an id or a list ",
                "of ids, got ", it->dump());
      g.stop_ids.push_back(id.get<int64_t>());
    }
  }
  if (o.temperature) g.sampling.temperature = *o.temperature;
  if (o.top_k) g.sampling.top_k = *o.top_k;
  if (o.top_p) g.sampling.top_p = *o.top_p;
  if (o.max_new_tokens) g.max_new_tokens = *o.max_new_tokens;
  g.kv_cache = !o.no_kv_cache;
  return g;
}

std::vector<std::string> read_prompts(const GenerateCommandOptions& o) {
  std::vector<std::string> prompts = o.prompts;
  if (!o.prompts_file.empty()) {
    std::ifstream in(o.prompts_file);
    MOE_CHECK(in.good(), "moe generate: cannot read --prompts-file ", o.prompts_file);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      prompts.push_back(line);
    }
    MOE_CHECK(prompts.size() > o.prompts.size(), "moe generate: --prompts-file ", o.prompts_file,
              " holds no line");
  }
  if (prompts.empty()) prompts.emplace_back();
  return prompts;
}

}  // namespace

CLI::App* add_generate_command(CLI::App& app, GenerateCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "continue prompts (a batch) with a KV cache: greedy (--temperature 0) or sampled "
      "(temperature, top-k, top-p), with the model folder's tokenizer.json and "
      "generation_config.json, --tokenizer-model, or byte tokens");
  cmd->add_option("--load,--model", o.load,
                  "model folder (Hugging Face config.json, or model_config.json), or a training "
                  "--save folder (its latest_checkpointed_iteration.txt picks iter_NNNNNNN)")
      ->required();
  cmd->add_option("--prompt", o.prompts,
                  "a text to continue (repeat for a batch; none: one new document)");
  cmd->add_option("--prompts-file", o.prompts_file, "a file of prompts, one a line (a batch)");
  cmd->add_option("--tokenizer-type", o.tokenizer_type,
                  "HuggingFaceTokenizer, SentencePieceTokenizer, Llama2Tokenizer or byte")
      ->check(CLI::IsMember(
          {"HuggingFaceTokenizer", "SentencePieceTokenizer", "Llama2Tokenizer", "byte"}));
  cmd->add_option("--tokenizer-model", o.tokenizer_model,
                  "tokenizer.json (or its folder); default: the model folder's, else byte tokens");
  cmd->add_option("--max-new-tokens", o.max_new_tokens,
                  "tokens to generate per prompt (default: generation_config.json's, else 200)");
  cmd->add_option("--temperature", o.temperature,
                  "softmax temperature; 0 is greedy (default: generation_config.json's, "
                  "greedy there unless do_sample; else 1)");
  cmd->add_option(
      "--top-k", o.top_k,
      "sample among the k likeliest; 0: all (default: generation_config.json's, else 0)");
  cmd->add_option("--top-p", o.top_p,
                  "nucleus: the likeliest ids up to this total probability; 1: all (default: "
                  "generation_config.json's, else 1)");
  cmd->add_option("--seed", o.generate.seed, "random seed of the sampler")->capture_default_str();
  cmd->add_option("--seq-length", o.generate.max_sequence_length,
                  "longest window given to the model; 0: its max_position_embeddings")
      ->capture_default_str();
  cmd->add_flag("--no-kv-cache", o.no_kv_cache,
                "recompute the window at every step instead of caching keys and values");
  cmd->add_option("--dtype", o.dtype, "f32 (CPU default), bf16 (GPU default; GPU only), f64 (CPU)")
      ->check(CLI::IsMember({"f32", "bf16", "f64"}));
  cmd->add_flag("--cpu", o.cpu, "run on the CPU even when a GPU is present");
  return cmd;
}

int run_generate(const GenerateCommandOptions& o, bool force_cpu) {
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
  std::string defaults_from = "built-in defaults";
  const train::GenerateOptions options = resolve_options(o, folder, defaults_from);
  train::check_sampling_options(options.sampling);  // before minutes of loading
  const std::vector<std::string> prompts = read_prompts(o);
  const checkpoint::CheckpointFormat format = checkpoint::detect_format(folder);
  const nn::ModelConfig config = checkpoint::read_model_config(folder, format);
  // The tokenizer, checked before minutes of loading: --tokenizer-*, else the folder's own
  // tokenizer.json, else byte tokens (the default run's models).
  std::string tokenizer_model = o.tokenizer_model;
  if (o.tokenizer_type.empty() && tokenizer_model.empty() &&
      fs::is_regular_file(fs::path(folder) / "tokenizer.json"))
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
            " has ", config.vocab_size, " vocabulary ids, fewer than the ", tokenizer->vocab_size(),
            " of ", tokenizer->description());

  MOE_CHECK(options.max_sequence_length >= 0 &&
                options.max_sequence_length <= config.max_position_embeddings,
            "moe generate: --seq-length ", options.max_sequence_length, " must be in 1..",
            config.max_position_embeddings,
            " (the model's max_position_embeddings), or 0 for that");

  auto model = checkpoint::load_model(folder, dtype, device);
  const train::SamplingOptions& s = options.sampling;
  const bool greedy = s.temperature == 0.0 || s.top_k == 1;
  std::printf("model %s from %s on %s in %s; tokenizer %s; %zu prompt(s); %s; ",
              config.name.c_str(), folder.c_str(), device.str().c_str(), dtype_name(dtype),
              tokenizer->description().c_str(), prompts.size(),
              options.kv_cache ? "KV cache" : "no KV cache");
  if (greedy)
    std::printf("greedy");
  else
    std::printf("temperature %g, top-k %lld, top-p %g, seed %llu", s.temperature,
                static_cast<long long>(s.top_k), s.top_p,
                static_cast<unsigned long long>(options.seed));
  std::printf(", at most %lld new tokens (%s)\n", static_cast<long long>(options.max_new_tokens),
              defaults_from.c_str());
  std::fflush(stdout);
  train::GenerateStats stats;
  const std::vector<std::string> texts =
      train::generate_texts(*model, *tokenizer, prompts, options, &stats);
  for (size_t i = 0; i < texts.size(); ++i)
    std::printf("---- %zu\n%s%s\n", i, prompts[i].c_str(), texts[i].c_str());
  std::printf(
      "----\nprefill: %lld prompt tokens in %.3f s; decode: %lld tokens in %.3f s, "
      "%.1f tokens/s\n",
      static_cast<long long>(stats.prompt_tokens), stats.prefill_seconds,
      static_cast<long long>(stats.decode_tokens), stats.decode_seconds,
      stats.decode_tokens_per_second());
  return 0;
}

}  // namespace moe::app
