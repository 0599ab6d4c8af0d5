// The bad-input sweep's shared machinery (docs/bad-input.md): seeded mutations of a valid file
// and the check every mutant must pass. A reader given a mutant either accepts it or throws an
// exception whose message names the file; it never crashes (SIGSEGV, SIGFPE, abort,
// std::terminate), never hangs and never allocates what a corrupt header claims.
//
// How each property is enforced, in process (a crash kills the test binary: the test fails):
//   - exceptions: caught by type; std::bad_alloc / std::length_error are failures whatever
//     their message (an allocation sized by the file), any other exception must name the file;
//   - crashes: a handler on the fatal signals (on its own stack, so a stack overflow is caught
//     too) prints the case that was running before the default action; under AddressSanitizer
//     its death callback does the same;
//   - hangs: a watchdog thread aborts the binary, naming the case, when one case runs longer
//     than MOE_SWEEP_CASE_TIMEOUT_S (default 20) seconds;
//   - memory: while a sweep runs, RLIMIT_DATA allows MOE_SWEEP_MEMORY_MB (default 1024) MiB
//     beyond what the process had mapped when it began, so a header-claimed size fails the
//     allocation (std::bad_alloc: a failure) instead of exhausting the machine. Not under
//     AddressSanitizer, whose shadow memory counts against that limit: run the ASan build with
//     ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=1024 instead (and
//     UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1, so that undefined behaviour ends in the
//     SIGABRT handler; docs/bad-input.md).
//
// Cases are deterministic: case i of a sweep draws from Rng(case_seed(MOE_SWEEP_SEED, sweep, i)),
// so a failure names (sweep, i) and MOE_SWEEP_CASE=i reruns that case alone.
// MOE_SWEEP_ITERATIONS scales the random cases of every sweep (default: each sweep's CI count).
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "moe/core/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define MOE_SWEEP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOE_SWEEP_ASAN 1
#endif
#endif
#ifdef MOE_SWEEP_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace moe::sweep {

// ---- settings ------------------------------------------------------------------------------

inline int64_t env_int(const char* name, int64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 0);
  return end != nullptr && *end == '\0' ? static_cast<int64_t>(v) : fallback;
}

// Random cases of a sweep: MOE_SWEEP_ITERATIONS if set, else the sweep's CI count.
inline int64_t iterations(int64_t ci_count) {
  return std::max<int64_t>(0, env_int("MOE_SWEEP_ITERATIONS", ci_count));
}
inline uint64_t base_seed() {
  return static_cast<uint64_t>(env_int("MOE_SWEEP_SEED", 1));
}
// MOE_SWEEP_CASE=i: only random case i (-1: all).
inline int64_t only_case() {
  return env_int("MOE_SWEEP_CASE", -1);
}

// ---- the generator -------------------------------------------------------------------------

// splitmix64: the same numbers on every platform and standard library (std::uniform_*
// distributions are not specified bit for bit).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(next() % n); }
  bool percent(int p) { return below(100) < static_cast<size_t>(p); }
  template <class T>
  const T& pick(const std::vector<T>& items) {
    return items[below(items.size())];
  }

 private:
  uint64_t state_;
};

// The seed of case `index` of sweep `sweep` (FNV-1a of the name, mixed with both numbers).
inline uint64_t case_seed(uint64_t base, std::string_view sweep, uint64_t index) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : sweep) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  Rng mix(h ^ (base * 0x9E3779B97F4A7C15ull) ^ (index << 1));
  return mix.next();
}

// ---- mutants -------------------------------------------------------------------------------

struct Mutant {
  std::string what;   // how it was made: "flip 2 bits at 17, 40"
  std::string bytes;  // the file's new content
  // A known defect of code outside the sweep's reader that this case exposes until it is
  // fixed (docs/bad-input.md lists them); shown with a failure. The assertion is unchanged.
  std::string depends_on;
};

inline std::string hex(uint64_t v) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%" PRIx64, v);
  return text;
}

// Integers that break size arithmetic: 0, 1, sign and width boundaries, 2^62, 2^64 - 1.
inline const std::vector<uint64_t>& interesting_integers() {
  static const std::vector<uint64_t> values{0,
                                            1,
                                            2,
                                            7,
                                            8,
                                            0x7f,
                                            0x80,
                                            0xff,
                                            0x100,
                                            0x7fff,
                                            0x8000,
                                            0xffff,
                                            0x10000,
                                            0x7fffffff,
                                            0x80000000,
                                            0xffffffff,
                                            0x100000000,
                                            uint64_t{1} << 62,
                                            0x7fffffffffffffff,
                                            0x8000000000000000,
                                            ~uint64_t{0},
                                            ~uint64_t{0} - 1,
                                            ~uint64_t{0} - 7};
  return values;
}

inline std::string le_bytes(uint64_t v, int width) {
  std::string out(static_cast<size_t>(width), '\0');
  for (int i = 0; i < width; ++i) out[static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
  return out;
}

// Lengths 0..40 (every header boundary of a small header), then `spread` more across the
// file, then the last 8 (a missing final element).
inline std::vector<Mutant> truncations(const std::string& valid, size_t spread = 48) {
  std::vector<size_t> lengths;
  const size_t n = valid.size();
  for (size_t k = 0; k < std::min<size_t>(n, 41); ++k) lengths.push_back(k);
  for (size_t k = 1; k <= spread && n > 0; ++k) lengths.push_back(n * k / (spread + 1));
  for (size_t k = 1; k <= 8 && k <= n; ++k) lengths.push_back(n - k);
  std::sort(lengths.begin(), lengths.end());
  lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
  std::vector<Mutant> out;
  for (const size_t len : lengths)
    out.push_back({"truncated to " + std::to_string(len) + " of " + std::to_string(n) + " bytes",
                   valid.substr(0, len), ""});
  return out;
}

// A fixed-width little-endian integer field of a binary header.
struct Field {
  std::string name;
  size_t offset = 0;
  int width = 8;
};

// Each field set to each interesting integer (cut to its width), and to the file size.
inline std::vector<Mutant> field_values(const std::string& valid,
                                        const std::vector<Field>& fields) {
  std::vector<Mutant> out;
  for (const Field& f : fields) {
    if (f.offset + static_cast<size_t>(f.width) > valid.size()) continue;
    std::vector<uint64_t> values = interesting_integers();
    values.push_back(valid.size());
    values.push_back(valid.size() + 1);
    const uint64_t mask = f.width == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * f.width)) - 1;
    std::vector<uint64_t> seen;
    for (uint64_t v : values) {
      v &= mask;
      if (std::find(seen.begin(), seen.end(), v) != seen.end()) continue;
      seen.push_back(v);
      std::string bytes = valid;
      bytes.replace(f.offset, static_cast<size_t>(f.width), le_bytes(v, f.width));
      out.push_back({f.name + " = " + hex(v), std::move(bytes), ""});
    }
  }
  return out;
}

// One random byte-level mutation. Positions fall in the first `hot` bytes (the header) half
// of the time.
inline Mutant mutate_bytes(const std::string& valid, Rng& rng, size_t hot = 64) {
  std::string b = valid;
  const auto position = [&](size_t extra) {
    const size_t n = b.size() + extra;
    if (n == 0) return size_t{0};
    return rng.percent(50) ? rng.below(std::min(n, hot)) : rng.below(n);
  };
  switch (rng.below(b.empty() ? 1 : 9)) {
    case 0: {
      const size_t len = rng.below(16) + 1;
      std::string junk;
      for (size_t i = 0; i < len; ++i) junk += static_cast<char>(rng.next());
      const size_t at = position(1);
      b.insert(at, junk);
      return {"insert " + std::to_string(len) + " random bytes at " + std::to_string(at), b, ""};
    }
    case 1: {
      const size_t len = rng.below(b.size()) + 0;
      return {"truncate to " + std::to_string(len) + " bytes", b.substr(0, len), ""};
    }
    case 2: {
      const size_t flips = rng.below(8) + 1;
      std::string where;
      for (size_t i = 0; i < flips; ++i) {
        const size_t at = position(0);
        b[at] = static_cast<char>(b[at] ^ (1 << rng.below(8)));
        where += (i ? ", " : "") + std::to_string(at);
      }
      return {"flip bits at " + where, b, ""};
    }
    case 3: {
      static const std::vector<uint8_t> bytes{0x00, 0xff, 0x7f, 0x80, 0xc0, 0xfe, '"', '\\'};
      const size_t at = position(0);
      const uint8_t v = rng.percent(50) ? rng.pick(bytes) : static_cast<uint8_t>(rng.next());
      b[at] = static_cast<char>(v);
      return {"byte " + std::to_string(at) + " = " + hex(v), b, ""};
    }
    case 4: {
      const size_t at = position(0);
      const size_t len = std::min(b.size() - at, rng.below(32) + 1);
      b.erase(at, len);
      return {"delete " + std::to_string(len) + " bytes at " + std::to_string(at), b, ""};
    }
    case 5: {
      const size_t from = rng.below(b.size());
      const size_t len = std::min(b.size() - from, rng.below(64) + 1);
      const size_t to = position(1);
      b.insert(to, valid.substr(from, len));
      return {"copy " + std::to_string(len) + " bytes from " + std::to_string(from) + " to " +
                  std::to_string(to),
              b, ""};
    }
    case 6: {
      static const int widths[] = {1, 2, 4, 8};
      const int width = widths[rng.below(4)];
      if (b.size() < static_cast<size_t>(width)) return {"unchanged (too short)", b, ""};
      std::vector<uint64_t> values = interesting_integers();
      values.push_back(valid.size());
      const uint64_t v = rng.pick(values);
      size_t at = position(0);
      at = std::min(at, b.size() - static_cast<size_t>(width));
      b.replace(at, static_cast<size_t>(width), le_bytes(v, width));
      return {std::to_string(width) + "-byte integer at " + std::to_string(at) + " = " + hex(v), b,
              ""};
    }
    case 7: {
      const size_t len = rng.below(64) + 1;
      for (size_t i = 0; i < len; ++i) b += static_cast<char>(rng.next());
      return {"append " + std::to_string(len) + " random bytes", b, ""};
    }
    default: {
      const size_t at = rng.below(b.size());
      const size_t len = std::min(b.size() - at, rng.below(256) + 1);
      std::fill(b.begin() + static_cast<std::ptrdiff_t>(at),
                b.begin() + static_cast<std::ptrdiff_t>(at + len), '\0');
      return {"zero " + std::to_string(len) + " bytes at " + std::to_string(at), b, ""};
    }
  }
}

// ---- JSON ----------------------------------------------------------------------------------

// A lexical view of JSON text: enough to find values, keys and members without parsing.
struct JsonToken {
  enum Kind { string, number, literal, open, close, colon, comma } kind;
  size_t begin = 0, end = 0;  // [begin, end) in the text
};

// The tokens of `text` up to the first byte that is not JSON (mutants need not be JSON).
inline std::vector<JsonToken> json_tokens(std::string_view text) {
  std::vector<JsonToken> out;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
      ++i;
    } else if (c == '"') {
      size_t j = i + 1;
      while (j < text.size() && text[j] != '"') j += text[j] == '\\' ? 2 : 1;
      if (j >= text.size()) break;
      out.push_back({JsonToken::string, i, j + 1});
      i = j + 1;
    } else if (c == '{' || c == '[') {
      out.push_back({JsonToken::open, i, i + 1});
      ++i;
    } else if (c == '}' || c == ']') {
      out.push_back({JsonToken::close, i, i + 1});
      ++i;
    } else if (c == ':' || c == ',') {
      out.push_back({c == ':' ? JsonToken::colon : JsonToken::comma, i, i + 1});
      ++i;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t j = i + 1;
      while (j < text.size() && std::strchr("0123456789+-.eE", text[j]) != nullptr) ++j;
      out.push_back({JsonToken::number, i, j});
      i = j;
    } else if (std::isalpha(static_cast<unsigned char>(c))) {
      size_t j = i + 1;
      while (j < text.size() && std::isalpha(static_cast<unsigned char>(text[j]))) ++j;
      out.push_back({JsonToken::literal, i, j});
      i = j;
    } else {
      break;
    }
  }
  return out;
}

// The index of the last token of the value that starts at token `first`.
inline size_t json_value_last(const std::vector<JsonToken>& tokens, size_t first) {
  if (tokens[first].kind != JsonToken::open) return first;
  int depth = 0;
  for (size_t k = first; k < tokens.size(); ++k) {
    if (tokens[k].kind == JsonToken::open) ++depth;
    if (tokens[k].kind == JsonToken::close && --depth == 0) return k;
  }
  return tokens.size() - 1;
}

// The tokens that start a value (not a key).
inline std::vector<size_t> json_value_starts(const std::vector<JsonToken>& tokens) {
  std::vector<size_t> out;
  for (size_t k = 0; k < tokens.size(); ++k) {
    const JsonToken::Kind kind = tokens[k].kind;
    if (kind == JsonToken::colon || kind == JsonToken::comma || kind == JsonToken::close) continue;
    if (kind == JsonToken::string && k + 1 < tokens.size() &&
        tokens[k + 1].kind == JsonToken::colon)
      continue;  // a key
    out.push_back(k);
  }
  return out;
}

inline std::vector<size_t> json_keys(const std::vector<JsonToken>& tokens) {
  std::vector<size_t> out;
  for (size_t k = 0; k + 1 < tokens.size(); ++k)
    if (tokens[k].kind == JsonToken::string && tokens[k + 1].kind == JsonToken::colon)
      out.push_back(k);
  return out;
}

// Numbers that break conversions: negative, 2^31, 2^62, past int64 and uint64, fractions,
// overflowing doubles.
inline const std::vector<std::string>& interesting_numbers() {
  static const std::vector<std::string> values{"0",
                                               "-1",
                                               "1",
                                               "2",
                                               "-2147483649",
                                               "2147483647",
                                               "2147483648",
                                               "4294967296",
                                               "4611686018427387904",
                                               "-4611686018427387904",
                                               "9223372036854775807",
                                               "9223372036854775808",
                                               "-9223372036854775808",
                                               "18446744073709551615",
                                               "18446744073709551616",
                                               "1e308",
                                               "-1e308",
                                               "1e999",
                                               "0.5",
                                               "-0.0",
                                               "1.0",
                                               "1e-320",
                                               "3.0e9",
                                               "123456789012345678901234567890"};
  return values;
}

// Byte sequences that are not UTF-8: a stray continuation, a truncated sequence, an overlong
// '/', a UTF-16 surrogate, a code point past U+10FFFF, 0xff.
inline const std::vector<std::string>& invalid_utf8() {
  static const std::vector<std::string> values{"\x80",
                                               "\xc3",
                                               "\xc3\x28",
                                               "\xc0\xaf",
                                               "\xe2\x82",
                                               "\xed\xa0\x80",
                                               "\xf4\x90\x80\x80",
                                               "\xff",
                                               "\xf8\x88\x80\x80\x80"};
  return values;
}

// [[[...0...]]] or {"a":{"a":...0...}} nested `depth` levels.
inline std::string deep_nesting(size_t depth, bool objects) {
  std::string out;
  out.reserve(depth * (objects ? 6 : 2) + 1);
  for (size_t i = 0; i < depth; ++i) out += objects ? "{\"a\":" : "[";
  out += "0";
  out.append(depth, objects ? '}' : ']');
  return out;
}

inline std::string replace_span(const std::string& text, size_t begin, size_t end,
                                const std::string& with) {
  return text.substr(0, begin) + with + text.substr(end);
}

inline std::string excerpt(std::string_view s, size_t max = 40) {
  std::string out;
  for (const char c : s.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      char e[8];
      std::snprintf(e, sizeof e, "\\x%02x", u);
      out += e;
    }
  }
  return s.size() > max ? out + "..." : out;
}

// One random JSON-aware mutation of `valid` (which must be JSON); `words` are strings of the
// format (dtype names, type tags, ...) that replace string values.
inline Mutant mutate_json(const std::string& valid, Rng& rng,
                          const std::vector<std::string>& words) {
  const std::vector<JsonToken> tokens = json_tokens(valid);
  const std::vector<size_t> values = json_value_starts(tokens);
  const std::vector<size_t> keys = json_keys(tokens);
  if (values.empty()) return mutate_bytes(valid, rng);
  const auto value_span = [&](size_t k) {
    return std::pair(tokens[k].begin, tokens[json_value_last(tokens, k)].end);
  };
  const auto where = [&](size_t at) { return " at byte " + std::to_string(at); };
  // Prefer scalar values for number and string edits.
  const auto pick_of = [&](JsonToken::Kind kind) -> std::optional<size_t> {
    std::vector<size_t> of;
    for (size_t k : values)
      if (tokens[k].kind == kind) of.push_back(k);
    if (of.empty()) return std::nullopt;
    return rng.pick(of);
  };
  switch (rng.below(13)) {
    case 0: {  // a number -> an interesting one
      const auto k = pick_of(JsonToken::number);
      if (!k) break;
      const std::string& n = rng.pick(interesting_numbers());
      return {"number '" +
                  excerpt(std::string_view(valid).substr(tokens[*k].begin,
                                                         tokens[*k].end - tokens[*k].begin)) +
                  "' -> " + n + where(tokens[*k].begin),
              replace_span(valid, tokens[*k].begin, tokens[*k].end, n), ""};
    }
    case 1: {  // any value -> another type
      static const std::vector<std::string> others{"null", "true",     "false", "0",
                                                   "-1",   "\"\"",     "[]",    "{}",
                                                   "[0]",  "{\"\":0}", "\"x\"", "1.5"};
      const size_t k = rng.pick(values);
      const auto [b, e] = value_span(k);
      const std::string& with = rng.pick(others);
      return {
          "value '" + excerpt(std::string_view(valid).substr(b, e - b)) + "' -> " + with + where(b),
          replace_span(valid, b, e, with), ""};
    }
    case 2: {  // a string value -> a word of the format
      const auto k = pick_of(JsonToken::string);
      if (!k || words.empty()) break;
      const std::string with = "\"" + rng.pick(words) + "\"";
      return {"string " +
                  excerpt(std::string_view(valid).substr(tokens[*k].begin,
                                                         tokens[*k].end - tokens[*k].begin)) +
                  " -> " + excerpt(with) + where(tokens[*k].begin),
              replace_span(valid, tokens[*k].begin, tokens[*k].end, with), ""};
    }
    case 3: {  // invalid UTF-8 inside a string (key or value)
      std::vector<size_t> strings;
      for (size_t k = 0; k < tokens.size(); ++k)
        if (tokens[k].kind == JsonToken::string) strings.push_back(k);
      if (strings.empty()) break;
      const JsonToken& t = tokens[rng.pick(strings)];
      const size_t at = t.begin + 1 + rng.below(t.end - t.begin - 1);
      const std::string& bad = rng.pick(invalid_utf8());
      return {"invalid UTF-8 " + excerpt(bad) + where(at),
              valid.substr(0, at) + bad + valid.substr(at), ""};
    }
    case 4: {  // a member given twice
      if (keys.empty()) break;
      const size_t k = rng.pick(keys);
      const size_t last = json_value_last(tokens, k + 2 < tokens.size() ? k + 2 : k);
      const size_t b = tokens[k].begin, e = tokens[last].end;
      const std::string member = valid.substr(b, e - b);
      return {"member " + excerpt(member) + " repeated" + where(b),
              valid.substr(0, e) + "," + member + valid.substr(e), ""};
    }
    case 5: {  // a member dropped
      if (keys.empty()) break;
      const size_t k = rng.pick(keys);
      if (k + 2 >= tokens.size()) break;
      const size_t last = json_value_last(tokens, k + 2);
      size_t b = tokens[k].begin, e = tokens[last].end;
      if (last + 1 < tokens.size() && tokens[last + 1].kind == JsonToken::comma)
        e = tokens[last + 1].end;
      else if (k > 0 && tokens[k - 1].kind == JsonToken::comma)
        b = tokens[k - 1].begin;
      return {"member " + excerpt(valid.substr(tokens[k].begin, 40)) + " removed" + where(b),
              replace_span(valid, b, e, ""), ""};
    }
    case 6: {  // a value nested deeply
      static const std::vector<size_t> depths{64, 1000, 100000};
      const size_t depth = rng.pick(depths);
      const bool objects = rng.percent(50);
      const size_t k = rng.pick(values);
      const auto [b, e] = value_span(k);
      return {"value" + where(b) + " -> " + std::to_string(depth) + " nested " +
                  (objects ? "objects" : "arrays"),
              replace_span(valid, b, e, deep_nesting(depth, objects)), ""};
    }
    case 7: {  // a container emptied
      const auto k = pick_of(JsonToken::open);
      if (!k) break;
      const auto [b, e] = value_span(*k);
      const std::string with = valid[b] == '{' ? "{}" : "[]";
      return {"container" + where(b) + " emptied", replace_span(valid, b, e, with), ""};
    }
    case 8: {  // an unknown key added to an object
      std::vector<size_t> objects;
      for (size_t k = 0; k < tokens.size(); ++k)
        if (tokens[k].kind == JsonToken::open && valid[tokens[k].begin] == '{')
          objects.push_back(k);
      if (objects.empty()) break;
      const size_t at = tokens[rng.pick(objects)].end;
      const bool empty = at < valid.size() &&
                         valid.find_first_not_of(" \n\t", at) != std::string::npos &&
                         valid[valid.find_first_not_of(" \n\t", at)] == '}';
      return {"unknown key added" + where(at),
              valid.substr(0, at) + "\"zz_unknown\": 1" + (empty ? "" : ",") + valid.substr(at),
              ""};
    }
    case 9: {  // a long array or string
      const size_t k = rng.pick(values);
      const auto [b, e] = value_span(k);
      std::string with;
      if (rng.percent(50)) {
        with = "[0";
        for (int i = 0; i < 20000; ++i) with += ",0";
        with += "]";
      } else {
        with = "\"" + std::string(100000, 'a') + "\"";
      }
      return {"value" + where(b) + " -> a long " + (with[0] == '[' ? "array" : "string"),
              replace_span(valid, b, e, with), ""};
    }
    case 10: {  // two values swapped
      const size_t k1 = rng.pick(values), k2 = rng.pick(values);
      auto [b1, e1] = value_span(k1);
      auto [b2, e2] = value_span(k2);
      if (b1 > b2) {
        std::swap(b1, b2);
        std::swap(e1, e2);
      }
      if (e1 > b2) break;  // nested in one another
      const std::string v1 = valid.substr(b1, e1 - b1), v2 = valid.substr(b2, e2 - b2);
      return {"values at bytes " + std::to_string(b1) + " and " + std::to_string(b2) + " swapped",
              valid.substr(0, b1) + v2 + valid.substr(e1, b2 - e1) + v1 + valid.substr(e2), ""};
    }
    case 11: {  // a structural character inserted or removed
      static const std::string structural = "{}[],:\"";
      std::string b = valid;
      const size_t at = rng.below(b.size());
      if (rng.percent(50)) {
        const char c = structural[rng.below(structural.size())];
        b.insert(at, 1, c);
        return {std::string("'") + c + "' inserted" + where(at), b, ""};
      }
      const JsonToken& t = tokens[rng.below(tokens.size())];
      b.erase(t.begin, 1);
      return {"'" + excerpt(valid.substr(t.begin, 1)) + "' removed" + where(t.begin), b, ""};
    }
    default:
      break;
  }
  return mutate_bytes(valid, rng);
}

// Whole-document cases every JSON reader gets: empty, not an object, deeply nested, a byte
// order mark, trailing garbage, a duplicate of every top-level key.
inline std::vector<Mutant> json_document_cases(const std::string& valid) {
  std::vector<Mutant> out{
      {"empty file", "", ""},
      {"whitespace only", " \n\t\n", ""},
      {"null", "null", ""},
      {"an array", "[]", ""},
      {"a string", "\"x\"", ""},
      {"a number", "1e999", ""},
      {"an empty object", "{}", ""},
      {"100000 nested arrays", deep_nesting(100000, false), ""},
      {"100000 nested objects", deep_nesting(100000, true), ""},
      {"a byte order mark first", "\xef\xbb\xbf" + valid, ""},
      {"trailing garbage", valid + "}x", ""},
      {"two documents", valid + valid, ""},
      {"NaN", "{\"a\": NaN}", ""},
      {"a NUL byte",
       valid.substr(0, valid.size() / 2) + std::string(1, '\0') + valid.substr(valid.size() / 2),
       ""},
  };
  const std::vector<JsonToken> tokens = json_tokens(valid);
  int depth = 0;
  for (size_t k = 0; k < tokens.size(); ++k) {
    if (tokens[k].kind == JsonToken::open) ++depth;
    if (tokens[k].kind == JsonToken::close) --depth;
    if (depth != 1 || tokens[k].kind != JsonToken::string || k + 2 >= tokens.size() ||
        tokens[k + 1].kind != JsonToken::colon)
      continue;
    const size_t last = json_value_last(tokens, k + 2);
    const std::string member = valid.substr(tokens[k].begin, tokens[last].end - tokens[k].begin);
    // The copy with another value (a number), so that "which one wins" is visible.
    const std::string key = valid.substr(tokens[k].begin, tokens[k].end - tokens[k].begin);
    out.push_back(
        {"top-level key " + excerpt(key) + " given twice",
         valid.substr(0, tokens[last].end) + "," + key + ": 7" + valid.substr(tokens[last].end),
         ""});
    (void)member;
  }
  return out;
}

// ---- YAML ----------------------------------------------------------------------------------

inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return lines;
}

inline std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += l + "\n";
  return out;
}

// One random line-level mutation of a YAML mapping of `key: value` lines.
inline Mutant mutate_yaml(const std::string& valid, Rng& rng) {
  std::vector<std::string> lines = split_lines(valid);
  if (lines.empty()) return mutate_bytes(valid, rng);
  const size_t i = rng.below(lines.size());
  const std::string line = lines[i];
  const size_t colon = line.find(':');
  static const std::vector<std::string> values{"",
                                               "~",
                                               "null",
                                               "[]",
                                               "{}",
                                               "[[1, 2]]",
                                               "{a: 1}",
                                               "-1",
                                               "0",
                                               "1e999",
                                               ".nan",
                                               "-.inf",
                                               "yes",
                                               "\"\"",
                                               "'x'",
                                               "0x10",
                                               "1_000",
                                               "!!binary aGk=",
                                               "&a 1",
                                               "*a",
                                               "|\n  x",
                                               "- 1",
                                               "\t1",
                                               "4611686018427387904",
                                               "-9223372036854775809",
                                               "18446744073709551616",
                                               "2147483648",
                                               "0.5",
                                               "[0]*999",
                                               "[1]*4611686018427387904"};
  switch (rng.below(8)) {
    case 0:
      lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(i), line);
      return {"line " + std::to_string(i + 1) + " '" + excerpt(line) + "' repeated",
              join_lines(lines), ""};
    case 1:
      lines.erase(lines.begin() + static_cast<std::ptrdiff_t>(i));
      return {"line " + std::to_string(i + 1) + " removed", join_lines(lines), ""};
    case 2:
      if (colon == std::string::npos) break;
      {
        const std::string& v = rng.pick(values);
        lines[i] = line.substr(0, colon + 1) + " " + v;
        return {"line " + std::to_string(i + 1) + " value -> '" + excerpt(v) + "'",
                join_lines(lines), ""};
      }
    case 3: {
      static const std::vector<size_t> depths{64, 1000, 100000};
      if (colon == std::string::npos) break;
      const size_t depth = rng.pick(depths);
      const bool maps = rng.percent(50);
      std::string nested;
      for (size_t d = 0; d < depth; ++d) nested += maps ? "{a: " : "[";
      nested += "0";
      for (size_t d = 0; d < depth; ++d) nested += maps ? "}" : "]";
      lines[i] = line.substr(0, colon + 1) + " " + nested;
      return {"line " + std::to_string(i + 1) + " value -> " + std::to_string(depth) + " nested " +
                  (maps ? "mappings" : "sequences"),
              join_lines(lines), ""};
    }
    case 4:
      lines[i] = std::string(rng.below(4) + 1, rng.percent(50) ? ' ' : '\t') + line;
      return {"line " + std::to_string(i + 1) + " indented", join_lines(lines), ""};
    case 5: {
      const std::string& bad = rng.pick(invalid_utf8());
      const size_t at = rng.below(line.size() + 1);
      lines[i] = line.substr(0, at) + bad + line.substr(at);
      return {"invalid UTF-8 " + excerpt(bad) + " in line " + std::to_string(i + 1),
              join_lines(lines), ""};
    }
    case 6:
      if (colon == std::string::npos) break;
      {
        static const std::vector<std::string> keys{"config", "zz_unknown", "",   "-",
                                                   "--lr",   "? a",        "<<", "lr lr"};
        const std::string& k = rng.pick(keys);
        lines[i] = k + line.substr(colon);
        return {"line " + std::to_string(i + 1) + " key -> '" + k + "'", join_lines(lines), ""};
      }
    default:
      break;
  }
  return mutate_bytes(valid, rng);
}

inline std::vector<Mutant> yaml_document_cases(const std::string& valid) {
  std::string laughs = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n";
  for (char c = 'b'; c <= 'j'; ++c)
    laughs += std::string(1, c) + ": &" + c + " [*" + char(c - 1) + ",*" + char(c - 1) + ",*" +
              char(c - 1) + ",*" + char(c - 1) + ",*" + char(c - 1) + ",*" + char(c - 1) + "]\n";
  return {
      {"empty file", "", ""},
      {"a comment only", "# nothing\n", ""},
      {"a scalar", "lr\n", ""},
      {"a sequence", "- lr\n- 1\n", ""},
      {"two documents", valid + "---\n" + valid, ""},
      {"a byte order mark first", "\xef\xbb\xbf" + valid, ""},
      {"100000 nested flow sequences", "lr: " + deep_nesting(100000, false) + "\n", ""},
      {"100000 nested block mappings",
       [] {
         std::string s;
         for (int d = 0; d < 2000; ++d) s += std::string(static_cast<size_t>(d), ' ') + "a:\n";
         return s;
       }(),
       ""},
      {"alias expansion (billion laughs)", laughs, ""},
      {"an alias to an undefined anchor", "lr: *nowhere\n", ""},
      {"a tab as indentation", "lr:\n\t1\n", ""},
      {"NUL bytes", std::string("lr: 1\0\0\0\n", 9), ""},
      {"an unterminated quote", "lr: \"1\n", ""},
  };
}

// ---- the check -----------------------------------------------------------------------------

namespace detail {

// What the crash handlers print: the sweep and case that was running (async-signal-safe).
inline char current_case[768];
inline std::atomic<int64_t> case_started_ns{0};

inline void write_current_case(const char* why) {
  const char intro[] = "\n*** bad-input sweep: ";
  (void)!::write(2, intro, sizeof intro - 1);
  (void)!::write(2, why, std::strlen(why));
  const char during[] = " during case: ";
  (void)!::write(2, during, sizeof during - 1);
  (void)!::write(2, current_case, strnlen(current_case, sizeof current_case));
  (void)!::write(2, "\n", 1);
}

inline struct sigaction previous_actions[32];

inline void on_fatal_signal(int sig, siginfo_t*, void*) {
  write_current_case(sig == SIGSEGV   ? "SIGSEGV"
                     : sig == SIGBUS  ? "SIGBUS"
                     : sig == SIGFPE  ? "SIGFPE"
                     : sig == SIGILL  ? "SIGILL"
                     : sig == SIGABRT ? "SIGABRT (abort, std::terminate)"
                                      : "fatal signal");
  // The previous action (the default, or the sanitizer's report) runs when the faulting
  // instruction runs again, or when abort() raises the signal again.
  sigaction(sig, &previous_actions[sig], nullptr);
  if (sig == SIGABRT) raise(sig);
}

inline void on_sanitizer_death() {
  write_current_case("sanitizer report");
}

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void install_guards() {
  static std::once_flag once;
  std::call_once(once, [] {
    // An alternate stack, so that a stack overflow still reaches the handler.
    static std::vector<char> alt(1 << 16);
    stack_t ss{};
    ss.ss_sp = alt.data();
    ss.ss_size = alt.size();
    sigaltstack(&ss, nullptr);
    for (const int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) {
      struct sigaction action {};
      action.sa_sigaction = on_fatal_signal;
      action.sa_flags = SA_SIGINFO | SA_ONSTACK;
      sigemptyset(&action.sa_mask);
      sigaction(sig, &action, &previous_actions[sig]);
    }
#ifdef MOE_SWEEP_ASAN
    __sanitizer_set_death_callback(on_sanitizer_death);
#endif
    const int64_t limit_s = env_int("MOE_SWEEP_CASE_TIMEOUT_S", 20);
    std::thread([limit_s] {
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        const int64_t started = case_started_ns.load();
        if (started != 0 && now_ns() - started > limit_s * 1'000'000'000) {
          write_current_case("a hang (MOE_SWEEP_CASE_TIMEOUT_S exceeded)");
          std::abort();
        }
      }
    }).detach();
  });
}

// The bytes the process has mapped writable (VmData of /proc/self/status), 0 if unknown.
inline uint64_t data_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmData:", 0) == 0) return std::strtoull(line.c_str() + 7, nullptr, 10) * 1024;
  return 0;
}

}  // namespace detail

// A sweep over one reader: check() runs one mutant and records the outcome; the destructor
// reports every failure (up to 20 in full) as a test failure and prints the counts.
class Sweep {
 public:
  explicit Sweep(std::string name) : name_(std::move(name)) {
    detail::install_guards();
#ifndef MOE_SWEEP_ASAN
    const uint64_t extra = static_cast<uint64_t>(env_int("MOE_SWEEP_MEMORY_MB", 1024)) << 20;
    const uint64_t mapped = detail::data_bytes();
    if (mapped > 0 && getrlimit(RLIMIT_DATA, &saved_limit_) == 0) {
      struct rlimit limit = saved_limit_;
      limit.rlim_cur = std::min<rlim_t>(saved_limit_.rlim_max, mapped + extra);
      limited_ = setrlimit(RLIMIT_DATA, &limit) == 0;
    }
#endif
  }
  ~Sweep() {
    if (limited_) setrlimit(RLIMIT_DATA, &saved_limit_);
    std::printf(
        "[ sweep    ] %s: %d cases, %d accepted, %d refused, %zu failed; slowest %.1f ms (%s)\n",
        name_.c_str(), accepted_ + refused_ + static_cast<int>(failures_.size()), accepted_,
        refused_, failures_.size(), slowest_s_ * 1e3, slowest_.c_str());
    std::string report;
    for (size_t i = 0; i < failures_.size() && i < 20; ++i) report += "\n  " + failures_[i];
    if (failures_.size() > 20)
      report += "\n  ... and " + std::to_string(failures_.size() - 20) + " more";
    if (!failures_.empty())
      ADD_FAILURE() << name_ << ": " << failures_.size() << " mutants broke the reader's contract"
                    << " (accept, or throw naming the file):" << report;
  }
  Sweep(const Sweep&) = delete;
  Sweep& operator=(const Sweep&) = delete;

  // Runs `read` on mutant `m` (already written where `read` looks). It must return, or throw
  // an exception whose message contains one of `names` (the file's name; for some readers the
  // flag or key that carries the file's values). Returns whether `read` returned.
  bool check(const Mutant& m, const std::vector<std::string>& names,
             const std::function<void()>& read) {
    const std::string label = name_ + " / " + m.what;
    std::snprintf(detail::current_case, sizeof detail::current_case, "%s%s%s", label.c_str(),
                  m.depends_on.empty() ? "" : " [defect: ",
                  m.depends_on.empty() ? "" : (m.depends_on + "]").c_str());
    std::string problem;
    const int64_t start = detail::now_ns();
    detail::case_started_ns.store(start);
    bool returned = false;
    try {
      read();
      returned = true;
    } catch (const std::bad_alloc& e) {
      problem = std::string("out of memory (an allocation sized by the file?): ") + e.what();
    } catch (const std::length_error& e) {
      problem = std::string("std::length_error (a size taken from the file?): ") + e.what();
    } catch (const std::exception& e) {
      const std::string message = e.what();
      bool named = false;
      for (const std::string& n : names) named = named || message.find(n) != std::string::npos;
      if (!named)
        problem = std::string(dynamic_cast<const Error*>(&e) ? "moe::Error" : "exception") +
                  " that does not name the file: " + message;
    } catch (...) {
      problem = "an exception not derived from std::exception";
    }
    const double seconds = static_cast<double>(detail::now_ns() - start) * 1e-9;
    detail::case_started_ns.store(0);
    if (seconds > slowest_s_) {
      slowest_s_ = seconds;
      slowest_ = m.what;
    }
    if (!problem.empty()) {
      failures_.push_back(m.what +
                          (m.depends_on.empty() ? "" : " [defect: " + m.depends_on + "]") +
                          ": " + problem.substr(0, 600));
    } else if (returned) {
      ++accepted_;
    } else {
      ++refused_;
    }
    return returned;
  }

  int accepted() const {
    return accepted_;
  }
  int refused() const {
    return refused_;
  }
  size_t failures() const {
    return failures_.size();
  }

 private:
  std::string name_;
  int accepted_ = 0, refused_ = 0;
  std::vector<std::string> failures_;
  double slowest_s_ = 0;
  std::string slowest_;
  struct rlimit saved_limit_ {};
  bool limited_ = false;
};

// The random case indices of a sweep: 0..iterations(ci_count)-1, or MOE_SWEEP_CASE alone.
inline std::vector<uint64_t> random_cases(int64_t ci_count) {
  const int64_t only = only_case();
  if (only >= 0) return {static_cast<uint64_t>(only)};
  std::vector<uint64_t> out(static_cast<size_t>(iterations(ci_count)));
  for (size_t i = 0; i < out.size(); ++i) out[i] = i;
  return out;
}

// Random case `index` of sweep `sweep`, labelled so that it can be rerun alone.
inline Mutant random_mutant(std::string_view sweep, uint64_t index,
                            const std::function<Mutant(Rng&)>& make) {
  Rng rng(case_seed(base_seed(), sweep, index));
  Mutant m = make(rng);
  m.what = "random case " + std::to_string(index) +
           " (MOE_SWEEP_SEED=" + std::to_string(base_seed()) +
           " MOE_SWEEP_CASE=" + std::to_string(index) + "): " + m.what;
  return m;
}

// ---- files ---------------------------------------------------------------------------------

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("sweep: cannot write " + path);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("sweep: cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A fresh folder for a test, removed afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           (std::string("moe_sweep_") + info->test_suite_name() + "_" + info->name() + "_" +
            std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
};

}  // namespace moe::sweep
