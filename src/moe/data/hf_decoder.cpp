#include "moe/data/hf_decoder.h"

#include <string_view>

#include "moe/data/byte_unicode.h"

namespace moe::data {
namespace {

std::string replace_all(const std::string& text, std::string_view from, std::string_view to) {
  if (from.empty() || text.find(from) == std::string::npos) return text;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = text.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(text, pos, hit - pos);
    out += to;
  }
  out.append(text, pos);
  return out;
}

// "<0xXX>" (either case of hex digit, as Rust's u8::from_str_radix reads it) -> the byte.
int fallback_byte(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  int value = 0;
  for (const char c : token.substr(3, 2)) {
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                             : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

std::vector<std::string> byte_fallback(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string bytes;
  const auto flush = [&] {
    if (bytes.empty()) return;
    if (!first_invalid_utf8(bytes)) {
      out.push_back(bytes);
    } else {
      for (size_t i = 0; i < bytes.size(); ++i) out.emplace_back("\xEF\xBF\xBD");  // U+FFFD
    }
    bytes.clear();
  };
  for (std::string& token : tokens) {
    const int byte = fallback_byte(token);
    if (byte >= 0) {
      bytes += static_cast<char>(byte);
      continue;
    }
    flush();
    out.push_back(std::move(token));
  }
  flush();
  return out;
}

// Strips up to `start` leading and `stop` trailing copies of the character `c` (UTF-8).
std::string strip(const std::string& token, const std::string& c, size_t start, size_t stop) {
  size_t begin = 0, end = token.size();
  for (size_t i = 0; i < start && token.compare(begin, c.size(), c) == 0 && !c.empty(); ++i)
    begin += c.size();
  for (size_t i = 0; i < stop && end >= begin + c.size() && !c.empty() &&
                     token.compare(end - c.size(), c.size(), c) == 0;
       ++i)
    end -= c.size();
  return token.substr(begin, end - begin);
}

}  // namespace

std::string run_hf_decoder(const std::vector<HfDecoderStep>& steps,
                           std::vector<std::string> tokens) {
  using Kind = HfDecoderStep::Kind;
  for (const HfDecoderStep& step : steps) {
    switch (step.kind) {
      case Kind::kReplace:
        for (std::string& t : tokens) t = replace_all(t, step.from, step.to);
        break;
      case Kind::kByteFallback:
        tokens = byte_fallback(std::move(tokens));
        break;
      case Kind::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case Kind::kStrip:
        for (std::string& t : tokens) t = strip(t, step.from, step.start, step.stop);
        break;
      case Kind::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i)
          tokens[i] = replace_all(tokens[i], step.from, i == 0 && step.drop_first ? "" : " ");
        break;
    }
  }
  std::string text;
  for (const std::string& t : tokens) text += t;
  return text;
}

}  // namespace moe::data
