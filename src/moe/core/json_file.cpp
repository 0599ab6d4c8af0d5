#include "moe/core/json_file.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "moe/core/error.h"

namespace moe {

size_t json_nesting_depth(std::string_view text) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;  // the escaped character, whatever it is
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

nlohmann::json parse_json_text(std::string_view text, const std::string& what,
                               const std::string& path) {
  const size_t depth = json_nesting_depth(text);
  MOE_CHECK(depth <= kMaxJsonDepth, what, " ", path, " nests arrays and objects ", depth,
            " levels deep; at most ", kMaxJsonDepth, " are read");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    MOE_FAIL(what, " ", path, " is not valid JSON: ", e.what());
  }
}

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  // An ifstream opens a folder and fails at the first read with a stream message: name it.
  MOE_CHECK(!std::filesystem::is_directory(path), what, " ", path, " is a folder, not a JSON file");
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "cannot open ", what, " ", path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  MOE_CHECK(!in.bad(), "cannot read ", what, " ", path);
  return parse_json_text(text, what, path);
}

namespace {

void append_excerpt(const nlohmann::json& value, size_t max, int level, std::string& out) {
  if (!value.is_structured()) {
    std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (text.size() > max) {
      size_t cut = max;
      while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
      text = text.substr(0, cut) + "...";
    }
    out += text;
    return;
  }
  const bool array = value.is_array();
  if (value.empty()) {
    out += array ? "[]" : "{}";
    return;
  }
  if (level >= 2) {
    out += array ? "[...]" : "{...}";
    return;
  }
  out += array ? '[' : '{';
  size_t count = 0;
  for (auto it = value.begin(); it != value.end(); ++it, ++count) {
    if (out.size() >= max) {
      out += ",...";
      break;
    }
    if (count > 0) out += ',';
    if (!array) {
      append_excerpt(nlohmann::json(it.key()), max, level + 1, out);
      out += ':';
    }
    append_excerpt(*it, max, level + 1, out);
  }
  out += array ? ']' : '}';
}

}  // namespace

std::string json_excerpt(const nlohmann::json& value, size_t max) {
  std::string out;
  append_excerpt(value, max, 0, out);
  return out;
}

}  // namespace moe
