// Reading a JSON file with errors that name it: "cannot open <what> <path>" and
// "<what> <path> is not valid JSON: <parser message>"; and JSON values quoted in messages.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace moe {

// `what` says what the file is for the messages ("model config", "token ids", ...).
nlohmann::json read_json_file(const std::string& path, const std::string& what);

// A JSON value as compact text for an error message. Never throws: nlohmann's dump() throws on
// strings that are not valid UTF-8 (a value built from bytes, not parsed), which would replace
// the message being built; here such bytes become U+FFFD. Text beyond `max_chars` is cut
// ("..." appended), so a whole object quoted by mistake stays readable.
std::string json_for_message(const nlohmann::json& value, size_t max_chars = 200);

}  // namespace moe
