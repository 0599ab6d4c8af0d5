// Reading JSON with errors that name the file: "cannot open <what> <path>" and
// "<what> <path> is not valid JSON: <parser message>". Nesting deeper than kMaxJsonDepth is
// refused before parsing: nlohmann's copy, comparison and dump recurse once per level, so a
// file of a million '[' would otherwise overflow the stack of whoever touches the value.
// JSON values quoted in error messages go through json_excerpt.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace moe {

// Far beyond any file moecore reads (configs, tokenizers, headers nest fewer than 10 levels).
inline constexpr size_t kMaxJsonDepth = 256;

// The deepest nesting of arrays and objects in `text` (brackets inside strings not counted).
size_t json_nesting_depth(std::string_view text);

// `text` parsed; `what` and `path` name it in the errors (not JSON, nested too deeply).
nlohmann::json parse_json_text(std::string_view text, const std::string& what,
                               const std::string& path);

// `what` says what the file is for the messages ("model config", "token ids", ...).
nlohmann::json read_json_file(const std::string& path, const std::string& what);

// A value as compact JSON text (as dump()) for a message, at most about `max` characters: long
// strings and containers are cut ("..."), containers below the second level are elided. Never
// throws: nlohmann's dump() throws on strings that are not valid UTF-8 (a value built from
// bytes, not parsed), which would replace the message being built; such bytes become U+FFFD.
std::string json_excerpt(const nlohmann::json& value, size_t max = 80);

}  // namespace moe
