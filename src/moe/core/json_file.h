// Reading a JSON file with errors that name it: "cannot open <what> <path>" and
// "<what> <path> is not valid JSON: <parser message>".
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace moe {

// `what` says what the file is for the messages ("model config", "token ids", ...).
nlohmann::json read_json_file(const std::string& path, const std::string& what);

}  // namespace moe
