#include "common/printed_text.h"

namespace moe::test {

std::string printed_text(std::FILE* out) {
  std::rewind(out);
  std::string text;
  char buffer[4096];
  while (const size_t n = std::fread(buffer, 1, sizeof buffer, out)) text.append(buffer, n);
  std::fclose(out);
  return text;
}

}  // namespace moe::test
