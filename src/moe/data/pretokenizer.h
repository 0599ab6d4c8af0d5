// The pre-tokenizers of Hugging Face byte-level BPE tokenizers (hf_bpe_tokenizer.h): how a text
// is cut into the pieces that BPE then merges within.
//
// `tokenizers` runs its regexes on Oniguruma; moecore runs them on PCRE2 (UTF + UCP, JIT) after
// translating the pattern so both engines match the same text (translate_onig_pattern):
//   \p{L}, \p{N}  PCRE2's property plus the letters / digits of newer Unicode versions that
//                 Oniguruma knows and PCRE2 10.42 does not (hf_unicode_tables.h)
//   \s            Oniguruma's 25 White_Space code points (PCRE2's \s adds U+180E); \S its
//                 complement (outside brackets only)
//   \uHHHH        \x{HHHH};  \v  the vertical tab (in PCRE2 \v is a class)
//   (?i:...)      unchanged: both fold case with Unicode's simple folding (checked for the
//                 letters of the contractions, e.g. ſ matches s in both)
// Everything whose meaning differs or was not checked is refused with moe::Error naming the
// construct: other \p{..} / \P, \d \w \b \h and the like, ^ and $ (line anchors in Oniguruma),
// inline flags other than i, nested brackets and && in a class, back-references.
//
// Matches are enumerated as Oniguruma's find_iter does (onig crate's FindMatches): an empty
// match right after the previous match is skipped by advancing one character.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moe::data {

// The PCRE2 spelling of an Oniguruma pattern (rules above); `field` names the pattern's place
// in tokenizer.json for messages.
std::string translate_onig_pattern(std::string_view pattern, std::string_view field);

// GPT-2's pre-tokenizer regex, built into `tokenizers`' ByteLevel(use_regex=true).
inline constexpr std::string_view kGpt2PretokenizerRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A compiled Oniguruma-compatible regex. Thread-safe: the per-call match data live in
// thread-local storage.
class PretokenizerRegex {
 public:
  // `pattern` in Oniguruma syntax; literal: match the text of `pattern` as is.
  PretokenizerRegex(std::string_view pattern, bool literal, std::string_view field);
  ~PretokenizerRegex();
  PretokenizerRegex(const PretokenizerRegex&) = delete;
  PretokenizerRegex& operator=(const PretokenizerRegex&) = delete;

  // Split(behavior = Isolated): `text` cut into its matches and the stretches between them,
  // in order, empty pieces dropped, appended to `pieces`. `text` must be valid UTF-8.
  void split_isolated(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
  std::string field_;
};

// The pre-tokenizer: Split(regex, Isolated) stages, then ByteLevel (its GPT-2 regex when
// use_regex, its prefix space when add_prefix_space). The byte-to-unicode mapping of ByteLevel
// is left to the BPE model, which takes the pieces as raw bytes.
// Or, for the SentencePiece kind, one Metaspace stage (tokenizers' pre_tokenizers::Metaspace):
// every ' ' becomes the replacement (U+2581 "▁"); the replacement is put in front when the text
// does not start with it and prepend_scheme is "always", or "first" and the text starts the
// whole input (offset 0 of the original text); with split, a new piece starts at each
// replacement character ("a▁▁b" -> "a", "▁", "▁b").
class Pretokenizer {
 public:
  enum class Prepend { kNever, kFirst, kAlways };
  struct Stage {
    std::unique_ptr<PretokenizerRegex> split;  // a Split stage, or null for ByteLevel
    bool add_prefix_space = false;             // ByteLevel only
    bool metaspace = false;                    // a Metaspace stage (split is null)
    std::string replacement;                   // Metaspace
    Prepend prepend = Prepend::kAlways;        // Metaspace
    bool split_on_replacement = true;          // Metaspace
  };
  explicit Pretokenizer(std::vector<Stage> stages) : stages_(std::move(stages)) {}

  // Calls piece_fn(std::string_view piece) for each piece of `text`, in order. `at_start`:
  // the text begins at offset 0 of the original input (Metaspace's "first").
  template <class PieceFn>
  void run(std::string_view text, PieceFn&& piece_fn, bool at_start = true) const {
    run_stage(0, text, piece_fn, at_start);
  }

 private:
  template <class PieceFn>
  void run_stage(size_t index, std::string_view text, PieceFn& piece_fn, bool at_start) const;
  // Metaspace's text: spaces replaced, the replacement prepended as the scheme says.
  std::string metaspace_text(const Stage& stage, std::string_view text, bool at_start) const;

  std::vector<Stage> stages_;
};

template <class PieceFn>
void Pretokenizer::run_stage(size_t index, std::string_view text, PieceFn& piece_fn,
                             bool at_start) const {
  if (text.empty()) return;
  if (index == stages_.size()) {
    piece_fn(text);
    return;
  }
  const Stage& stage = stages_[index];
  if (stage.metaspace) {
    const std::string replaced = metaspace_text(stage, text, at_start);
    const std::string_view r = stage.replacement;
    std::string_view rest = replaced;
    if (!stage.split_on_replacement || r.empty()) {
      run_stage(index + 1, rest, piece_fn, at_start);
      return;
    }
    while (!rest.empty()) {
      size_t next = rest.find(r, rest.compare(0, r.size(), r) == 0 ? r.size() : 0);
      if (next == std::string_view::npos) next = rest.size();
      run_stage(index + 1, rest.substr(0, next), piece_fn, at_start);
      rest.remove_prefix(next);
    }
    return;
  }
  std::string prefixed;  // ByteLevel's add_prefix_space: " " + text unless it starts with ' '
  if (!stage.split && stage.add_prefix_space && text.front() != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed += ' ';
    prefixed += text;
    text = prefixed;
  }
  if (!stage.split) {
    run_stage(index + 1, text, piece_fn, at_start);
    return;
  }
  std::vector<std::string_view> pieces;
  stage.split->split_isolated(text, pieces);
  for (std::string_view piece : pieces) run_stage(index + 1, piece, piece_fn, at_start);
}

}  // namespace moe::data
