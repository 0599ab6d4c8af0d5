// Size fields of config.json, model_config.json and the ModelConfig itself: each is checked
// against its least value and its bound (config_limits.h) before anything is computed from it,
// and the error names the field. These inputs once crashed or failed elsewhere:
// "num_attention_heads": 0 divided by zero (SIGFPE) in `moe info / forward / convert`,
// "num_hidden_layers": -1 made a vector of 2^64 entries, a 2^40 vocabulary failed to allocate.
#include "moe/nn/config_limits.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>

#include "common/check.h"
#include "moe/checkpoint/hf_config_import.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/nn/model_config_json.h"
#include "moe/nn/model_zoo.h"
#include "moe/nn/param_count.h"
#include "nn/hf_config_texts.h"

namespace moe::nn {
namespace {

using checkpoint::from_hf_config;
using nlohmann::json;

const std::vector<std::string>& tiny_hf_models() {
  static const std::vector<std::string> names{"mixtral-tiny", "qwen2-moe-tiny", "qwen3-moe-tiny",
                                              "deepseek-v2-tiny", "deepseek-v3-tiny"};
  return names;
}

json hf(const std::string& zoo_name) {
  return test::hf_config_json(zoo_name);
}

// The moe::Error's message ("" when none was thrown).
std::string error_of(const std::function<void()>& f) {
  return test::message_of(f);
}

TEST(ConfigLimits, CheckSizeNamesTheFieldAndTheReason) {
  EXPECT_NO_THROW(check_size("x", 5, 1, kLayerLimit));
  EXPECT_SAYS(error_of([] { check_size("--num-layers", 0, 1, kLayerLimit); }),
              "--num-layers must be positive, got 0");
  EXPECT_SAYS(error_of([] { check_size("--kv-channels", -1, 0, kWidthLimit); }),
              "--kv-channels must not be negative, got -1");
  EXPECT_SAYS(error_of([] { check_size("vocab_size", int64_t{1} << 40, 1, kVocabLimit); }),
              "vocab_size 1099511627776 exceeds 2147483647", "32-bit");
}

TEST(ConfigLimits, HfZeroOrNegativeCountsNameTheField) {
  for (const std::string& name : tiny_hf_models()) {
    SCOPED_TRACE(name);
    for (const char* field : {"num_attention_heads", "num_hidden_layers", "hidden_size",
                              "vocab_size", "num_key_value_heads", "intermediate_size"})
      for (int64_t value : {int64_t{0}, int64_t{-1}}) {
        SCOPED_TRACE(std::string(field) + " " + std::to_string(value));
        json config = hf(name);
        config[field] = value;
        EXPECT_SAYS(error_of([&] { from_hf_config(config); }),
                    "field \"" + std::string(field) + "\" must be positive");
      }
  }
}

TEST(ConfigLimits, HfHugeSizesNameTheFieldAndTheBound) {
  const int64_t huge = int64_t{1} << 40;
  for (const std::string& name : tiny_hf_models()) {
    SCOPED_TRACE(name);
    for (const char* field : {"num_hidden_layers", "hidden_size", "vocab_size",
                              "num_attention_heads", "max_position_embeddings"}) {
      SCOPED_TRACE(field);
      json config = hf(name);
      config[field] = huge;
      EXPECT_SAYS(error_of([&] { from_hf_config(config); }),
                  "field \"" + std::string(field) + "\" 1099511627776 exceeds");
    }
  }
  json experts = hf("deepseek-v3-tiny");
  experts["n_routed_experts"] = huge;
  EXPECT_SAYS(error_of([&] { from_hf_config(experts); }), "\"n_routed_experts\"", "exceeds");
  json shared = hf("deepseek-v3-tiny");
  shared["n_shared_experts"] = -2;
  EXPECT_SAYS(error_of([&] { from_hf_config(shared); }), "\"n_shared_experts\"", "negative");
  // Beyond int64: named, not wrapped around to a negative number.
  json unsigned_huge = hf("mixtral-tiny");
  unsigned_huge["num_hidden_layers"] = uint64_t{18446744073709551615u};
  EXPECT_SAYS(error_of([&] { from_hf_config(unsigned_huge); }), "\"num_hidden_layers\"",
              "does not fit a 64-bit integer");
}

// Each size within its bound, the whole too large for any machine: named, not an overflowed
// parameter count.
TEST(ConfigLimits, TheWholeModelIsBounded) {
  json config = hf("mixtral-tiny");
  config["vocab_size"] = 2147483647;
  config["hidden_size"] = 1 << 20;
  config["num_hidden_layers"] = 4096;
  config["num_local_experts"] = 1 << 16;
  config["intermediate_size"] = 1 << 20;
  EXPECT_SAYS(error_of([&] { from_hf_config(config); }), "parameters", "2^53");
}

// Messages quote JSON values without throwing on bytes that are not UTF-8 (nlohmann's dump()
// throws type_error 316 there, which replaced the message being built).
TEST(ConfigLimits, MessagesQuoteValuesThatAreNotUtf8) {
  json config = hf("qwen3-moe-tiny");
  config["hidden_size"] = std::string("4\xff");
  EXPECT_SAYS(error_of([&] { from_hf_config(config); }), "\"hidden_size\" must be an integer");
  json model = json::parse(model_zoo_json("mixtral-tiny"));
  model["hidden_size"] = std::string("\xc3");
  EXPECT_SAYS(error_of([&] { model_config_from_json(model); }), "hidden_size must be an integer");
  EXPECT_EQ(json_excerpt(std::string("a\xff")), "\"a\xEF\xBF\xBD\"");  // U+FFFD
  EXPECT_EQ(json_excerpt(std::string(300, 'x'), 200).size(), 203u);    // cut, "..." added
}

TEST(ConfigLimits, ModelConfigJsonSizesAreCheckedAsRead) {
  const json good = json::parse(model_zoo_json("mixtral-tiny"));
  auto says = [&](const std::function<void(json&)>& change,
                  std::initializer_list<const char*> parts) {
    json j = good;
    change(j);
    const std::string message = error_of([&] { model_config_from_json(j); });
    for (const char* part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
  };
  says([](json& j) { j["num_layers"] = int64_t{1} << 40; }, {"num_layers 1099511627776 exceeds"});
  says([](json& j) { j["num_layers"] = -1; }, {"num_layers must be positive"});
  says([](json& j) { j["num_attention_heads"] = 0; }, {"num_attention_heads must be positive"});
  says([](json& j) { j["vocab_size"] = int64_t{1} << 40; }, {"vocab_size", "32-bit"});
  says([](json& j) { j["moe"]["num_experts"] = int64_t{1} << 40; }, {"moe.num_experts", "exceeds"});
  says([](json& j) { j["mla"]["kv_lora_rank"] = -5; }, {"mla.kv_lora_rank", "negative"});
  // A pattern longer than the model is refused before it is expanded.
  says([](json& j) { j["moe_layer_freq"] = "[1]*999999999"; },
       {"--moe-layer-freq", "more layers than --num-layers"});
}

TEST(ConfigLimits, ValidateChecksSizesBeforeDerivedValues) {
  ModelConfig c = model_zoo("mixtral-tiny");
  c.kv_channels = 0;
  c.num_attention_heads = 0;
  EXPECT_EQ(c.head_dim(), 0);  // no division by zero
  EXPECT_SAYS(error_of([&] { count_parameters(c); }), "--num-attention-heads must be positive");
  c = model_zoo("mixtral-tiny");
  c.num_layers = int64_t{1} << 40;
  EXPECT_SAYS(error_of([&] { c.validate(); }), "--num-layers 1099511627776 exceeds 4096");
  c = model_zoo("mixtral-tiny");
  c.moe.moe_ffn_hidden_size = int64_t{1} << 40;
  EXPECT_SAYS(error_of([&] { c.validate(); }), "--moe-ffn-hidden-size", "exceeds");
  // Every zoo model is within the bounds.
  for (const std::string& name : model_zoo_names()) EXPECT_NO_THROW(model_zoo(name).validate());
}

// A folder given where a JSON file belongs is named as such (an ifstream opens a folder and
// fails only when read).
TEST(ConfigLimits, AFolderIsNotAConfigFile) {
  const std::string folder = std::filesystem::temp_directory_path().string();
  EXPECT_SAYS(error_of([&] { load_model_config(folder); }), folder, "is a folder");
}

}  // namespace
}  // namespace moe::nn
