// What a function printed to a FILE* the test gave it (std::tmpfile()): the whole text, read from
// the start; the file is closed.
#pragma once

#include <cstdio>
#include <string>

namespace moe::test {

std::string printed_text(std::FILE* out);

}  // namespace moe::test
