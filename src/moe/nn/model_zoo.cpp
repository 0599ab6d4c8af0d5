// The model zoo (model_zoo.h): names and lookups over the embedded configs.
#include "moe/nn/model_zoo.h"

#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/nn/model_config_json.h"

namespace moe::nn {

std::vector<std::string> model_zoo_names() {
  std::vector<std::string> names;
  for (const detail::ZooEntry& e : detail::zoo_entries()) names.push_back(e.name);
  return names;
}

const std::string& model_zoo_json(const std::string& name) {
  for (const detail::ZooEntry& e : detail::zoo_entries())
    if (e.name == name) return e.json;
  std::string known;
  for (const detail::ZooEntry& e : detail::zoo_entries()) {
    if (!known.empty()) known += ", ";
    known += e.name;
  }
  MOE_FAIL("\"", name, "\" is not in the model zoo; the zoo has: ", known);
}

ModelConfig model_zoo(const std::string& name) {
  const std::string& text = model_zoo_json(name);
  try {
    ModelConfig config = model_config_from_json(nlohmann::json::parse(text));
    MOE_CHECK(config.name == name, "zoo entry ", name, " is named ", config.name);
    return config;
  } catch (const nlohmann::json::exception& e) {
    MOE_FAIL("zoo entry ", name, " is not valid JSON: ", e.what());
  }
}

}  // namespace moe::nn
