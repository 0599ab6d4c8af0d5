#include "moe/data/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>
#include <cstdio>

#include "moe/core/error.h"
#include "moe/data/hf_unicode_tables.h"

namespace moe::data {
namespace {

// Oniguruma's \s: the White_Space code points (U+180E, which PCRE2's \s adds, is not one).
constexpr std::string_view kOnigWhitespace =
    R"(\t\n\x{0B}\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

template <size_t N>
std::string class_items(std::string_view property, const CodePointRange (&extra)[N]) {
  std::string out(property);
  char buffer[40];
  for (const CodePointRange& r : extra) {
    std::snprintf(buffer, sizeof buffer, "\\x{%X}-\\x{%X}", static_cast<unsigned>(r.first),
                  static_cast<unsigned>(r.last));
    out += buffer;
  }
  return out;
}

const std::string& letter_items() {
  static const std::string items = class_items("\\p{L}", kOnigOnlyL);
  return items;
}

const std::string& number_items() {
  static const std::string items = class_items("\\p{N}", kOnigOnlyN);
  return items;
}

bool is_hex(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}

}  // namespace

std::string translate_onig_pattern(std::string_view pattern, std::string_view field) {
  std::string out;
  out.reserve(pattern.size() * 2);
  bool in_class = false;
  const auto refuse = [&](std::string_view what, size_t at) {
    MOE_FAIL(field, ": the regex '", pattern, "' uses ", what, " at offset ", at,
             ", whose meaning in Oniguruma (Hugging Face tokenizers) and PCRE2 was not checked "
             "to agree; not supported");
  };
  // Items that are a set of characters: inline inside brackets, wrapped in brackets outside.
  const auto add_set = [&](std::string_view items) {
    if (in_class) {
      out += items;
    } else {
      out += '[';
      out += items;
      out += ']';
    }
  };
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\') {
      MOE_CHECK(i + 1 < pattern.size(), field, ": the regex '", pattern, "' ends with a '\\'");
      const char e = pattern[++i];
      if (e == 'p' || e == 'P') {
        const size_t close = pattern.find('}', i);
        const std::string_view name =
            close == std::string_view::npos ? std::string_view{} : pattern.substr(i, close - i + 1);
        if (name == "p{L}") {
          add_set(letter_items());
        } else if (name == "p{N}") {
          add_set(number_items());
        } else {
          std::string what = "\\";
          what += name.empty() ? pattern.substr(i, 1) : name;
          refuse(what, i - 1);
        }
        i = close;
      } else if (e == 's') {
        add_set(kOnigWhitespace);
      } else if (e == 'S') {
        if (in_class) refuse("\\S inside brackets", i - 1);
        out += "[^";
        out += kOnigWhitespace;
        out += ']';
      } else if (e == 'v') {
        out += "\\x{0B}";
      } else if (e == 'u' && i + 4 < pattern.size() && is_hex(pattern[i + 1]) &&
                 is_hex(pattern[i + 2]) && is_hex(pattern[i + 3]) && is_hex(pattern[i + 4])) {
        out += "\\x{";
        out += pattern.substr(i + 1, 4);
        out += '}';
        i += 4;
      } else if (e == 'x' || e == 'r' || e == 'n' || e == 't' || e == 'f') {
        out += '\\';
        out += e;
      } else if (std::isalnum(static_cast<unsigned char>(e))) {
        const char what[] = {'\\', e, '\0'};
        refuse(what, i - 1);
      } else {
        out += '\\';  // an escaped punctuation character: itself in both engines
        out += e;
      }
      continue;
    }
    if (in_class) {
      if (c == '[') refuse("a nested bracket class", i);
      if (c == '&' && i + 1 < pattern.size() && pattern[i + 1] == '&') refuse("'&&'", i);
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') refuse("']' first in a class", i + 1);
      continue;
    }
    if (c == '^' || c == '$') refuse(std::string("the anchor ") + c, i);
    if (c == '(' && i + 1 < pattern.size() && pattern[i + 1] == '?') {
      const std::string_view rest = pattern.substr(i + 2);
      const bool known = rest.starts_with(":") || rest.starts_with("=") || rest.starts_with("!") ||
                         rest.starts_with(">") || rest.starts_with("<=") ||
                         rest.starts_with("<!") || rest.starts_with("i:") ||
                         rest.starts_with("i)") || rest.starts_with("-i:") ||
                         rest.starts_with("-i)");
      if (!known) refuse("the group '(?" + std::string(rest.substr(0, 2)) + "'", i);
    }
    out += c;
  }
  MOE_CHECK(!in_class, field, ": the regex '", pattern, "' has an unclosed '['");
  return out;
}

struct PretokenizerRegex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

namespace {

// Per-thread match data and JIT stack: PCRE2 match data may not be shared between threads.
// The JIT stack grows to 64 MiB for the backtracking of \s+(?!\S) over long whitespace runs.
struct ThreadMatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  ThreadMatchState() { pcre2_jit_stack_assign(context, nullptr, jit_stack); }
  ~ThreadMatchState() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_data_free(data);
  }
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

size_t utf8_char_length(uint8_t lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

}  // namespace

PretokenizerRegex::PretokenizerRegex(std::string_view pattern, bool literal, std::string_view field)
    : code_(std::make_unique<Code>()), field_(field) {
  const std::string translated =
      literal ? std::string(pattern) : translate_onig_pattern(pattern, field);
  int error = 0;
  PCRE2_SIZE offset = 0;
  // PCRE2_LITERAL allows no UCP (nor needs it: a literal has no classes).
  const uint32_t options = PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                              options, &error, &offset, nullptr);
  MOE_CHECK(code_->code != nullptr, field, ": the regex '", pattern, "' (as PCRE2: '", translated,
            "') does not compile: ", pcre2_message(error), " at offset ", offset);
  const int jit = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE);
  MOE_CHECK(jit == 0 || jit == PCRE2_ERROR_JIT_BADOPTION, field, ": PCRE2 JIT compilation of '",
            pattern, "' failed: ", pcre2_message(jit));
}

PretokenizerRegex::~PretokenizerRegex() = default;

void PretokenizerRegex::split_isolated(std::string_view text,
                                       std::vector<std::string_view>& pieces) const {
  ThreadMatchState& state = thread_match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t search_from = 0;   // onig's last_end
  size_t previous_end = 0;  // where the last match (or the text) ended: the next gap's start
  bool have_match = false;  // onig's last_match_end.is_some()
  size_t last_match_end = 0;
  while (search_from <= text.size()) {
    const int rc = pcre2_match(code_->code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK,
                               state.data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    MOE_CHECK(rc > 0, field_, ": PCRE2 matching failed: ", pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const size_t start = ovector[0], end = ovector[1];
    if (start == end && have_match && last_match_end == end) {
      // Oniguruma's iterator skips an empty match right after the previous one.
      search_from +=
          search_from < text.size() ? utf8_char_length(static_cast<uint8_t>(text[search_from])) : 1;
      continue;
    }
    search_from = end;
    have_match = true;
    last_match_end = end;
    if (start > previous_end) pieces.push_back(text.substr(previous_end, start - previous_end));
    if (end > start) pieces.push_back(text.substr(start, end - start));
    previous_end = end;
  }
  if (previous_end < text.size()) pieces.push_back(text.substr(previous_end));
}

std::string Pretokenizer::metaspace_text(const Stage& stage, std::string_view text,
                                         bool at_start) const {
  std::string out;
  out.reserve(text.size() + 3);
  const bool starts_with = text.substr(0, stage.replacement.size()) == stage.replacement ||
                           (text.front() == ' ' && !stage.replacement.empty());
  if (!starts_with &&
      (stage.prepend == Prepend::kAlways || (stage.prepend == Prepend::kFirst && at_start)))
    out += stage.replacement;
  for (const char c : text) {
    if (c == ' ') {
      out += stage.replacement;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace moe::data
