#include "moe/core/json_file.h"

#include <fstream>

#include "moe/core/error.h"

namespace moe {

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  MOE_CHECK(in.good(), "cannot open ", what, " ", path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    MOE_FAIL(what, " ", path, " is not valid JSON: ", e.what());
  }
}

}  // namespace moe
