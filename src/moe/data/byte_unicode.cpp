#include "moe/data/byte_unicode.h"

#include <array>

namespace moe::data {
namespace {

bool maps_to_itself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct ByteTables {
  std::array<char32_t, 256> to_unicode{};
  std::array<int16_t, 0x144> to_byte{};  // code points 0 .. U+0143; -1: not in the mapping

  ByteTables() {
    to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      to_unicode[b] = maps_to_itself(b) ? static_cast<char32_t>(b) : next++;
      to_byte[to_unicode[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

// The length of the valid UTF-8 prefix of a sequence starting at s[0] (Unicode 15, table 3-7):
// the full sequence length when it is well formed, else the length of its maximal subpart
// (>= 1 byte); `valid` says which.
size_t utf8_sequence(std::string_view s, bool& valid) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t lead = byte(0);
  valid = true;
  if (lead < 0x80) return 1;
  size_t length = 0;
  uint8_t low = 0x80, high = 0xBF;  // the allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // no overlong forms
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // no overlong forms
    if (lead == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    valid = false;
    return 1;
  }
  for (size_t i = 1; i < length; ++i) {
    const uint8_t lo = i == 1 ? low : 0x80, hi = i == 1 ? high : 0xBF;
    if (i >= s.size() || byte(i) < lo || byte(i) > hi) {
      valid = false;
      return i;
    }
  }
  return length;
}

}  // namespace

char32_t byte_to_unicode(uint8_t b) {
  return tables().to_unicode[b];
}

std::optional<uint8_t> unicode_to_byte(char32_t c) {
  if (c >= tables().to_byte.size() || tables().to_byte[c] < 0) return std::nullopt;
  return static_cast<uint8_t>(tables().to_byte[c]);
}

std::optional<std::string> byte_level_bytes(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  size_t i = 0;
  while (i < token.size()) {
    const auto lead = static_cast<uint8_t>(token[i]);
    char32_t c = lead;
    size_t length = 1;
    if (lead >= 0x80) {
      // The mapping's characters are all below U+0800: two bytes at most.
      if ((lead & 0xE0) != 0xC0 || i + 1 >= token.size()) return std::nullopt;
      c = (static_cast<char32_t>(lead & 0x1F) << 6) | (static_cast<uint8_t>(token[i + 1]) & 0x3F);
      length = 2;
    }
    const std::optional<uint8_t> byte = unicode_to_byte(c);
    if (!byte) return std::nullopt;
    out += static_cast<char>(*byte);
    i += length;
  }
  return out;
}

void append_utf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

std::optional<size_t> first_invalid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    if (static_cast<uint8_t>(text[i]) < 0x80) {  // the common ASCII run
      ++i;
      continue;
    }
    bool valid = false;
    const size_t length = utf8_sequence(text.substr(i), valid);
    if (!valid) return i;
    i += length;
  }
  return std::nullopt;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    bool valid = false;
    const size_t length = utf8_sequence(bytes.substr(i), valid);
    if (valid) {
      out.append(bytes.data() + i, length);
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
    }
    i += length;
  }
  return out;
}

}  // namespace moe::data
