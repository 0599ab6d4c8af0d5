// The bad-input sweep of the configuration readers (docs/bad-input.md): Hugging Face config.json
// (the five fixture families), moecore's model_config.json (zoo presets and what a checkpoint
// writes) and `moe train --config` YAML files. Mutants change types, sizes (0, negative, 2^31,
// 2^62, past int64), enumerations, nesting and keys. A config that reads is then counted as
// `moe info` does (parameters per layer and in total).
//
// Cases marked "defect" reproduce defects the sweep found in the readers (config validation,
// YAML); they assert the fixed behaviour.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/check.h"
#include "fuzz/sweep.h"
#include "moe/checkpoint/hf_config_import.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"
#include "moe/nn/param_count.h"
#include "moe/train/train_args.h"

namespace moe::nn {
namespace {

using checkpoint::from_hf_config_file;
using nlohmann::json;
using sweep::Mutant;

const std::vector<std::string>& config_words() {
  static const std::vector<std::string> words{"mixtral",
                                              "qwen2_moe",
                                              "qwen3_moe",
                                              "deepseek_v2",
                                              "deepseek_v3",
                                              "llama",
                                              "",
                                              "yarn",
                                              "default",
                                              "linear",
                                              "dynamic",
                                              "longrope",
                                              "llama3",
                                              "silu",
                                              "gelu",
                                              "noaux_tc",
                                              "greedy",
                                              "group_limited_greedy",
                                              "softmax",
                                              "sigmoid",
                                              "gqa",
                                              "mla",
                                              "half",
                                              "interleaved",
                                              "bf16",
                                              "f32",
                                              "fp8",
                                              "aux_loss",
                                              "seq_aux_loss",
                                              "sinkhorn",
                                              "none",
                                              "alltoall",
                                              "allgather",
                                              "probs",
                                              "position",
                                              "([0]*3+[1]*58)",
                                              "[0]*999999999",
                                              "([1]*2)",
                                              "0",
                                              "[",
                                              "x"};
  return words;
}

// Visible under UBSan only (signed overflow is undefined behaviour, not an exception).
constexpr const char* kOverflow =
    "sizes of 2^62 pass validate() and count_parameters overflows int64 (config owner)";

void count(const ModelConfig& c) {
  const ModelParamCount n = count_parameters(c);
  (void)n.total();
  (void)model_config_to_json(c).dump();
}

TEST(ConfigSweep, HuggingFaceConfigJson) {
  sweep::ScratchDir dir;
  const std::string path = dir.path("config.json");
  sweep::Sweep sweep("Hugging Face config.json");
  const auto run = [&](const Mutant& m) {
    sweep::write_file(path, m.bytes);
    return sweep.check(m, {"config.json"}, [&] { count(from_hf_config_file(path)); });
  };
  for (const char* family : {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"}) {
    const std::string valid =
        sweep::read_file(test::fixture_path(std::string("hf/") + family + "/config.json"));
    EXPECT_TRUE(run({std::string(family) + ": unchanged", valid, ""}));
    for (Mutant m : sweep::json_document_cases(valid)) {
      m.what = std::string(family) + ": " + m.what;
      run(m);
    }
    const json root = json::parse(valid);
    for (const char* key : {"num_attention_heads", "num_key_value_heads", "hidden_size",
                            "num_hidden_layers", "vocab_size", "intermediate_size"}) {
      for (const json& value : {json(0), json(-1), json(int64_t{1} << 62), json(2147483648ll)}) {
        json copy = root;
        copy[key] = value;
        const bool heads = std::string(key) == "num_attention_heads" && value == json(0);
        const bool layers = std::string(key) == "num_hidden_layers" && value != json(0);
        const bool huge = value == json(int64_t{1} << 62);
        run({std::string(family) + ": " + key + " = " + value.dump(), copy.dump(),
             heads    ? "num_attention_heads 0 divides by zero before validation (config owner)"
             : layers ? "num_hidden_layers sizes the layer pattern before validation (config owner)"
             : huge   ? kOverflow
                      : ""});
      }
    }
    for (const uint64_t i : sweep::random_cases(60)) {
      run(sweep::random_mutant(std::string("config.json ") + family, i, [&](sweep::Rng& rng) {
        Mutant m = rng.percent(90) ? sweep::mutate_json(valid, rng, config_words())
                                   : sweep::mutate_bytes(valid, rng, valid.size());
        m.what = std::string(family) + ": " + m.what;
        return m;
      }));
    }
  }
  EXPECT_GT(sweep.refused(), 0);
}

TEST(ConfigSweep, ModelConfigJson) {
  sweep::ScratchDir dir;
  const std::string path = dir.path("model_config.json");
  sweep::Sweep sweep("model_config.json");
  const auto run = [&](const Mutant& m) {
    sweep::write_file(path, m.bytes);
    return sweep.check(m, {"model_config.json"}, [&] { count(load_model_config(path)); });
  };
  std::vector<std::pair<std::string, std::string>> bases;
  for (const char* name : {"mixtral-tiny", "qwen2-moe-tiny", "deepseek-v3-tiny"})
    bases.emplace_back(name, model_zoo_json(name));
  // What a checkpoint's model folder holds: every field written out.
  bases.emplace_back("written", model_config_to_json(model_zoo("deepseek-v2-tiny")).dump(2));
  for (const auto& [name, valid] : bases) {
    EXPECT_TRUE(run({name + ": unchanged", valid, ""}));
    for (Mutant m : sweep::json_document_cases(valid)) {
      m.what = name + ": " + m.what;
      run(m);
    }
    const json root = json::parse(valid);
    for (const char* key : {"num_attention_heads", "num_query_groups", "hidden_size", "num_layers",
                            "vocab_size", "kv_channels", "ffn_hidden_size"}) {
      for (const json& value : {json(0), json(-1), json(int64_t{1} << 62)}) {
        json copy = root;
        copy[key] = value;
        const bool huge = value == json(int64_t{1} << 62);
        const bool layers = std::string(key) == "num_layers" && huge;
        run({name + ": " + key + " = " + value.dump(), copy.dump(),
             layers ? "num_layers expands moe_layer_freq before validation (config owner)"
             : huge ? kOverflow
                    : ""});
      }
    }
    {
      json copy = root;
      copy["moe_layer_freq"] = "[0]*999999999";
      run({name + ": moe_layer_freq [0]*999999999", copy.dump(),
           "--moe-layer-freq repeat counts expand before the length check (config owner)"});
    }
    for (const uint64_t i : sweep::random_cases(60)) {
      run(sweep::random_mutant("model_config.json " + name, i, [&](sweep::Rng& rng) {
        Mutant m = rng.percent(90) ? sweep::mutate_json(valid, rng, config_words())
                                   : sweep::mutate_bytes(valid, rng, valid.size());
        m.what = name + ": " + m.what;
        return m;
      }));
    }
  }
  EXPECT_GT(sweep.refused(), 0);
}

// YAML values reach the flags' own checks, whose messages name the flag ("--num-layers ...")
// rather than the file; either names the cause.
TEST(ConfigSweep, TrainYaml) {
  sweep::ScratchDir dir;
  const std::string path = dir.path("run.yaml");
  const std::string valid =
      "# a Megatron-style config\n"
      "model: mixtral-tiny\n"
      "num_layers: 2\n"
      "moe-router-topk: 2\n"
      "micro_batch_size: 2\n"
      "global_batch_size: 4\n"
      "seq_length: 32\n"
      "lr: 1.0e-3\n"
      "min_lr: 1.0e-4\n"
      "train_iters: 10\n"
      "moe_layer_freq: [0, 1]\n"
      "moe_aux_loss_coeff: 0.01\n"
      "check_for_nan_in_loss_and_grad: true\n"
      "moe_router_enable_expert_bias: false\n"
      "seed: 7\n";
  sweep::Sweep sweep("train --config YAML");
  const std::vector<std::string> names{"run.yaml", "--"};
  const auto run = [&](const Mutant& m) {
    sweep::write_file(path, m.bytes);
    return sweep.check(m, names, [&] {
      const train::TrainRunConfig r = train::parse_train_args({"--config", path});
      (void)train::run_config_json(r).dump();
      (void)train::describe(r);
    });
  };
  EXPECT_TRUE(run({"unchanged", valid, ""}));
  for (const Mutant& m : sweep::yaml_document_cases(valid)) run(m);
  for (const Mutant& m : sweep::truncations(valid, 16)) run(m);
  // A key given twice is refused, naming it (yaml-cpp keeps one of the two silently).
  const std::vector<std::string> lines = sweep::split_lines(valid);
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> twice = lines;
    const std::string key = lines[i].substr(0, lines[i].find(':'));
    twice.push_back(key + ": " + (key == "model" ? "qwen2-moe-tiny" : "3"));
    const bool accepted = run({"key '" + key + "' given twice", sweep::join_lines(twice),
                               "YAML duplicate keys refused (train_args owner)"});
    EXPECT_FALSE(accepted) << "run.yaml with '" << key
                           << "' twice was accepted [defect: YAML duplicate keys refused "
                              "(train_args owner)]";
  }
  // Errors of values that the flags' checks do not name.
  run({"model: a name not in the zoo", "model: nonexistent-model\n",
       "the zoo lookup of --model names neither the flag nor the file (train_args owner)"});
  run({"a mapping as a key ('? a: 1')", "? a: 1\nlr: 0.1\n",
       "a YAML key that is not a string escapes as yaml-cpp's bad conversion (train_args owner)"});
  run({"a sequence as a key", "[lr, 1]: 0.1\n",
       "a YAML key that is not a string escapes as yaml-cpp's bad conversion (train_args owner)"});
  for (const char* value : {"0", "-1", "4611686018427387904", "9223372036854775808", "1e999",
                            ".nan", "[0]*999999999", "''"}) {
    for (const char* key : {"num_layers", "num_attention_heads", "seq_length", "micro_batch_size",
                            "train_iters", "moe_layer_freq", "lr"}) {
      const std::string yaml = [&] {
        std::string out;
        for (const std::string& l : sweep::split_lines(valid))
          if (l.rfind(std::string(key) + ":", 0) != 0) out += l + "\n";
        return out + key + ": " + value + "\n";
      }();
      const bool heads = std::string(key) == "num_attention_heads" && std::string(value) == "0";
      const bool freq = std::string(value) == "[0]*999999999";
      run({std::string(key) + ": " + value, yaml,
           heads  ? "num_attention_heads 0 divides by zero before validation (config owner)"
           : freq ? "--moe-layer-freq repeat counts expand before the length check (config owner)"
                  : ""});
    }
  }
  for (const uint64_t i : sweep::random_cases(200)) {
    run(sweep::random_mutant("train yaml", i, [&](sweep::Rng& rng) {
      return rng.percent(85) ? sweep::mutate_yaml(valid, rng)
                             : sweep::mutate_bytes(valid, rng, valid.size());
    }));
  }
  EXPECT_GT(sweep.refused(), 0);
}

}  // namespace
}  // namespace moe::nn
