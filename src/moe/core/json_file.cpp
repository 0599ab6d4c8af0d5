#include "moe/core/json_file.h"

#include <filesystem>
#include <fstream>

#include "moe/core/error.h"

namespace moe {

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  // An ifstream opens a folder and fails at the first read with a stream message: name it.
  MOE_CHECK(!std::filesystem::is_directory(path), what, " ", path, " is a folder, not a JSON file");
  std::ifstream in(path);
  MOE_CHECK(in.good(), "cannot open ", what, " ", path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    MOE_FAIL(what, " ", path, " is not valid JSON: ", e.what());
  }
}

std::string json_for_message(const nlohmann::json& value, size_t max_chars) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > max_chars) {
    // Cut at a UTF-8 character boundary (not inside a multi-byte sequence).
    size_t cut = max_chars;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text.resize(cut);
    text += "...";
  }
  return text;
}

}  // namespace moe
