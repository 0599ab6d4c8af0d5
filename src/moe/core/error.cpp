#include "moe/core/error.h"

namespace moe::detail {

void throw_error(const char* file, int line, const char* condition, const std::string& message) {
  std::ostringstream out;
  out << message;
  if (condition != nullptr) out << (message.empty() ? "" : " ") << "[check failed: " << condition << "]";
  out << " (" << file << ":" << line << ")";
  throw Error(out.str());
}

}  // namespace moe::detail
