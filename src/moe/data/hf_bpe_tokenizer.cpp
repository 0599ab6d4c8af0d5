#include "moe/data/hf_bpe_tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_set>

#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/data/bpe_model.h"
#include "moe/data/byte_unicode.h"
#include "moe/data/hf_unicode_tables.h"
#include "moe/data/pretokenizer.h"

namespace moe::data {
namespace {

using json = nlohmann::json;

// Reading tokenizer.json strictly: every key of an object this file interprets must be known,
// every value supported; anything else names its field and is refused.
struct Reader {
  std::string source;

  [[noreturn]] void refuse(const std::string& field, const json& value,
                           std::string_view supported) const {
    MOE_FAIL(source, ": ", field, " = ", json_excerpt(value),
             " is not supported (supported: ", supported, ")");
  }

  void check_object(const json& obj, const std::string& field,
                    std::initializer_list<std::string_view> keys) const {
    MOE_CHECK(obj.is_object(), source, ": ", field, " must be an object, got ", json_excerpt(obj));
    for (const auto& [key, value] : obj.items()) {
      (void)value;
      MOE_CHECK(std::find(keys.begin(), keys.end(), key) != keys.end(), source, ": ", field,
                " has the key '", key,
                "', which this reader does not know (refused rather than"
                " ignored)");
    }
  }

  bool flag(const json& obj, const char* key, const std::string& field, bool fallback) const {
    if (!obj.contains(key) || obj[key].is_null()) return fallback;
    MOE_CHECK(obj[key].is_boolean(), source, ": ", field, ".", key, " must be true or false, got ",
              json_excerpt(obj[key]));
    return obj[key].get<bool>();
  }

  std::string text(const json& obj, const char* key, const std::string& field) const {
    MOE_CHECK(obj.contains(key) && obj[key].is_string(), source, ": ", field, ".", key,
              " must be a string");
    return obj[key].get<std::string>();
  }

  std::string type(const json& obj, const std::string& field) const {
    MOE_CHECK(obj.is_object(), source, ": ", field, " must be an object, got ", json_excerpt(obj));
    return text(obj, "type", field);
  }

  // obj[key], or null when obj is not an object or has no such key (nlohmann's const
  // operator[] on a missing key is undefined behaviour).
  static const json& member(const json& obj, const std::string& key) {
    static const json null_value;
    if (!obj.is_object()) return null_value;
    const auto it = obj.find(key);
    return it == obj.end() ? null_value : *it;
  }
};

// Unicode White_Space, the \s of Rust's regex that lstrip / rstrip use.
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// The code point of valid UTF-8 at s[i] and its length.
char32_t decode_utf8_at(std::string_view s, size_t i, size_t& length) {
  const auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(s[i + k])); };
  const char32_t lead = b(0);
  if (lead < 0x80) return length = 1, lead;
  if (lead < 0xE0) return length = 2, ((lead & 0x1F) << 6) | (b(1) & 0x3F);
  if (lead < 0xF0) return length = 3, ((lead & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  return length = 4,
         ((lead & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

// Where the run of whitespace that ends at `end` starts.
size_t whitespace_run_start(std::string_view s, size_t end) {
  size_t start = end;
  while (start > 0) {
    size_t lead = start - 1;
    while (lead > 0 && (static_cast<uint8_t>(s[lead]) & 0xC0) == 0x80) --lead;
    size_t length = 0;
    if (!is_white_space(decode_utf8_at(s, lead, length))) break;
    start = lead;
  }
  return start;
}

// Where the run of whitespace that starts at `start` ends.
size_t whitespace_run_end(std::string_view s, size_t start) {
  size_t end = start;
  while (end < s.size()) {
    size_t length = 0;
    if (!is_white_space(decode_utf8_at(s, end, length))) break;
    end += length;
  }
  return end;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "cannot read the tokenizer file ", path.string());
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

// transformers' eos_token from tokenizer_config.json, else special_tokens_map.json: a string,
// or an AddedToken object with "content".
std::optional<std::string> read_eos_token(const std::filesystem::path& folder) {
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const std::filesystem::path path = folder / name;
    if (!std::filesystem::exists(path)) continue;
    const json config = parse_json_text(read_file(path), "tokenizer config", path.string());
    MOE_CHECK(config.is_object(), path.string(), " is not a JSON object");
    if (!config.contains("eos_token") || config["eos_token"].is_null()) continue;
    const json& eos = config["eos_token"];
    if (eos.is_string()) return eos.get<std::string>();
    MOE_CHECK(eos.is_object() && eos.contains("content") && eos["content"].is_string(),
              path.string(), ": eos_token must be a string or an object with a 'content' string");
    return eos["content"].get<std::string>();
  }
  return std::nullopt;
}

std::string utf8proc_nfc(std::string_view text) {
  if (text.empty()) return {};
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &result,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  MOE_CHECK(length >= 0, "NFC normalization failed: ", utf8proc_errmsg(length));
  std::string out(reinterpret_cast<const char*>(result), static_cast<size_t>(length));
  std::free(result);
  return out;
}

bool is_nfc_barrier(char32_t c) {
  const auto it = std::upper_bound(std::begin(kNfcBarriers), std::end(kNfcBarriers), c,
                                   [](char32_t x, const CodePointRange& r) { return x < r.first; });
  return it != std::begin(kNfcBarriers) && c <= std::prev(it)->last;
}

// NFC as tokenizers computes it: utf8proc's NFC on the stretches between the barrier code
// points of hf_unicode_tables.h (characters tokenizers' older tables know nothing of), which
// stay as they are.
std::string nfc(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t stretch = 0, i = 0;
  while (i < text.size()) {
    size_t length = 1;
    if (static_cast<uint8_t>(text[i]) >= 0xDF) {  // the barriers are all above U+07C0
      if (is_nfc_barrier(decode_utf8_at(text, i, length))) {
        out += utf8proc_nfc(text.substr(stretch, i - stretch));
        out.append(text.data() + i, length);
        stretch = i + length;
      }
    } else if (static_cast<uint8_t>(text[i]) >= 0xC0) {
      length = 2;
    }
    i += length;
  }
  out += utf8proc_nfc(text.substr(stretch));
  return out;
}

}  // namespace

// The added tokens as a byte trie: the longest token starting at a position in one walk.
struct HfBpeTokenizer::AddedTokenTrie {
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t token = -1;
  };
  std::vector<Node> nodes{1};
  bool first_byte[256] = {};

  bool empty() const { return nodes.size() == 1; }

  void add(std::string_view text, int32_t token) {
    if (text.empty()) return;
    first_byte[static_cast<uint8_t>(text[0])] = true;
    int32_t node = 0;
    for (const char ch : text) {
      const auto byte = static_cast<uint8_t>(ch);
      int32_t next = -1;
      for (const auto& [b, child] : nodes[node].children)
        if (b == byte) next = child;
      if (next < 0) {
        next = static_cast<int32_t>(nodes.size());
        nodes[node].children.emplace_back(byte, next);
        nodes.emplace_back();
      }
      node = next;
    }
    nodes[node].token = token;
  }

  // The longest token that starts at text[pos] (-1: none) and its length.
  int32_t longest_at(std::string_view text, size_t pos, size_t& length) const {
    int32_t node = 0, found = -1;
    for (size_t i = pos; i < text.size(); ++i) {
      int32_t next = -1;
      for (const auto& [b, child] : nodes[node].children)
        if (b == static_cast<uint8_t>(text[i])) next = child;
      if (next < 0) break;
      node = next;
      if (nodes[node].token >= 0) {
        found = nodes[node].token;
        length = i + 1 - pos;
      }
    }
    return found;
  }
};

std::unique_ptr<HfBpeTokenizer> HfBpeTokenizer::from_file(const std::string& path) {
  std::filesystem::path file = path;
  if (std::filesystem::is_directory(file)) file /= "tokenizer.json";
  MOE_CHECK(std::filesystem::is_regular_file(file), "no tokenizer.json at ", path);
  return std::make_unique<HfBpeTokenizer>(read_file(file), file.string(),
                                          read_eos_token(file.parent_path()));
}

HfBpeTokenizer::HfBpeTokenizer(std::string_view json_text, std::string source,
                               std::optional<std::string> eos_token)
    : source_(std::move(source)),
      raw_trie_(std::make_unique<AddedTokenTrie>()),
      normalized_trie_(std::make_unique<AddedTokenTrie>()) {
  const Reader r{source_};
  const json root = parse_json_text(json_text, "tokenizer", source_);
  MOE_CHECK(root.is_object(), source_, " is not a JSON object");
  r.check_object(root, "tokenizer.json",
                 {"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer",
                  "model", "post_processor", "decoder"});
  for (const char* key : {"truncation", "padding"})
    if (root.contains(key) && !root[key].is_null()) r.refuse(key, root[key], "null");

  // ---- normalizer: none, or NFC / Prepend / Replace(String), alone or in a Sequence ----------
  const auto add_normalizer = [&](const json& n, const std::string& field) {
    const std::string type = r.type(n, field);
    if (type == "NFC") {
      r.check_object(n, field, {"type"});
      normalizer_.push_back({NormalizerStep::Kind::kNfc, {}, {}});
    } else if (type == "Prepend") {
      r.check_object(n, field, {"type", "prepend"});
      normalizer_.push_back({NormalizerStep::Kind::kPrepend, r.text(n, "prepend", field), {}});
    } else if (type == "Replace") {
      r.check_object(n, field, {"type", "pattern", "content"});
      const json& pattern = Reader::member(n, "pattern");
      if (!(pattern.is_object() && pattern.size() == 1 && pattern.contains("String") &&
            pattern["String"].is_string() && !pattern["String"].get<std::string>().empty()))
        r.refuse(field + ".pattern", pattern, "{\"String\": a non-empty string}");
      normalizer_.push_back({NormalizerStep::Kind::kReplace, pattern["String"].get<std::string>(),
                             r.text(n, "content", field)});
    } else {
      r.refuse(field + ".type", n["type"], "NFC, Prepend, Replace");
    }
  };
  const json normalizer = root.value("normalizer", json());
  if (!normalizer.is_null()) {
    if (r.type(normalizer, "normalizer") == "Sequence") {
      r.check_object(normalizer, "normalizer", {"type", "normalizers"});
      const json& list = Reader::member(normalizer, "normalizers");
      MOE_CHECK(list.is_array(), source_, ": normalizer.normalizers must be a list");
      for (size_t i = 0; i < list.size(); ++i)
        add_normalizer(list[i], "normalizer.normalizers[" + std::to_string(i) + "]");
    } else {
      add_normalizer(normalizer, "normalizer");
    }
  }

  // ---- pre-tokenizer ------------------------------------------------------------------------
  std::vector<Pretokenizer::Stage> stages;
  bool byte_level = false;
  const auto add_byte_level = [&](const json& p, const std::string& field) {
    r.check_object(p, field, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
    Pretokenizer::Stage byte_level_stage;
    byte_level_stage.add_prefix_space = r.flag(p, "add_prefix_space", field, true);
    stages.push_back(std::move(byte_level_stage));
    if (r.flag(p, "use_regex", field, true)) {
      Pretokenizer::Stage regex;
      regex.split = std::make_unique<PretokenizerRegex>(kGpt2PretokenizerRegex, false,
                                                        field + " (GPT-2's regex)");
      stages.push_back(std::move(regex));
    }
    byte_level = true;
  };
  const auto add_split = [&](const json& p, const std::string& field) {
    r.check_object(p, field, {"type", "pattern", "behavior", "invert"});
    if (r.text(p, "behavior", field) != "Isolated")
      r.refuse(field + ".behavior", p["behavior"], "Isolated");
    if (r.flag(p, "invert", field, false)) r.refuse(field + ".invert", p["invert"], "false");
    const json& pattern = p.contains("pattern") ? p["pattern"] : json();
    const bool is_regex = pattern.is_object() && pattern.size() == 1 && pattern.contains("Regex") &&
                          pattern["Regex"].is_string();
    const bool is_string = pattern.is_object() && pattern.size() == 1 &&
                           pattern.contains("String") && pattern["String"].is_string();
    if (!is_regex && !is_string)
      r.refuse(field + ".pattern", pattern, "{\"Regex\": ...}, {\"String\": ...}");
    const std::string text =
        is_regex ? pattern["Regex"].get<std::string>() : pattern["String"].get<std::string>();
    Pretokenizer::Stage split;
    split.split = std::make_unique<PretokenizerRegex>(text, is_string, source_ + ": " + field);
    stages.push_back(std::move(split));
  };
  const json pre = root.value("pre_tokenizer", json());
  const std::string pre_type = pre.is_null() ? "null" : r.type(pre, "pre_tokenizer");
  if (pre_type == "ByteLevel") {
    add_byte_level(pre, "pre_tokenizer");
  } else if (pre_type == "null") {
    byte_level_ = false;  // the SentencePiece kind: each stretch is one BPE word
  } else if (pre_type == "Metaspace") {
    r.check_object(
        pre, "pre_tokenizer",
        {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"});
    Pretokenizer::Stage stage;
    stage.metaspace = true;
    stage.replacement = r.text(pre, "replacement", "pre_tokenizer");
    MOE_CHECK(!stage.replacement.empty() && stage.replacement.find(' ') == std::string::npos,
              source_, ": pre_tokenizer.replacement must be a character other than ' '");
    stage.split_on_replacement = r.flag(pre, "split", "pre_tokenizer", true);
    // Files before tokenizers 0.19 say add_prefix_space (true: "always") instead.
    const json& scheme = Reader::member(pre, "prepend_scheme");
    if (scheme.is_null()) {
      stage.prepend = r.flag(pre, "add_prefix_space", "pre_tokenizer", true)
                          ? Pretokenizer::Prepend::kAlways
                          : Pretokenizer::Prepend::kNever;
    } else if (scheme == "always") {
      stage.prepend = Pretokenizer::Prepend::kAlways;
    } else if (scheme == "first") {
      stage.prepend = Pretokenizer::Prepend::kFirst;
    } else if (scheme == "never") {
      stage.prepend = Pretokenizer::Prepend::kNever;
    } else {
      r.refuse("pre_tokenizer.prepend_scheme", scheme, "always, first, never");
    }
    stages.push_back(std::move(stage));
    byte_level_ = false;
  } else if (pre_type == "Sequence") {
    r.check_object(pre, "pre_tokenizer", {"type", "pretokenizers"});
    const json& list = Reader::member(pre, "pretokenizers");
    MOE_CHECK(list.is_array(), source_, ": pre_tokenizer.pretokenizers must be a list");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string field = "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]";
      const std::string type = r.type(list[i], field);
      MOE_CHECK(!byte_level, source_, ": ", field,
                " comes after ByteLevel; ByteLevel must be "
                "the last pre-tokenizer of the Sequence");
      if (type == "Split") {
        add_split(list[i], field);
      } else if (type == "ByteLevel") {
        add_byte_level(list[i], field);
      } else {
        r.refuse(field + ".type", list[i]["type"], "Split, ByteLevel");
      }
    }
  } else {
    r.refuse("pre_tokenizer", pre, "ByteLevel, Sequence[Split..., ByteLevel], Metaspace, null");
  }
  MOE_CHECK(byte_level || !byte_level_, source_,
            ": pre_tokenizer has no ByteLevel; a byte-level BPE needs one");
  pretokenizer_ = std::make_unique<Pretokenizer>(std::move(stages));

  // ---- model --------------------------------------------------------------------------------
  MOE_CHECK(root.contains("model"), source_, ": no model");
  const json& m = root["model"];
  if (r.type(m, "model") != "BPE") r.refuse("model.type", m["type"], "BPE");
  r.check_object(m, "model",
                 {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                  "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges"});
  if (m.contains("dropout") && !m["dropout"].is_null() &&
      !(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0))
    r.refuse("model.dropout", m["dropout"], "null");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(key) && !m[key].is_null() && m[key] != "")
      r.refuse(std::string("model.") + key, m[key], "null, \"\"");
  const bool byte_fallback = r.flag(m, "byte_fallback", "model", false);
  if (byte_fallback && byte_level_)
    r.refuse("model.byte_fallback", m["byte_fallback"],
             "false with a ByteLevel pre-tokenizer; true with Metaspace or no pre-tokenizer");
  BpeModel::Config config;
  config.byte_level = byte_level_;
  config.byte_fallback = byte_fallback;
  config.field = source_ + ": model";
  config.fuse_unk = r.flag(m, "fuse_unk", "model", false);
  config.ignore_merges = r.flag(m, "ignore_merges", "model", false);
  if (m.contains("unk_token") && !m["unk_token"].is_null())
    config.unk_token = r.text(m, "unk_token", "model");
  MOE_CHECK(m.contains("vocab") && m["vocab"].is_object(), source_,
            ": model.vocab must be an object");
  for (const auto& [token, id] : m["vocab"].items()) {
    MOE_CHECK(
        id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (int64_t{1} << 31),
        source_, ": model.vocab['", token, "'] = ", json_excerpt(id), " is not an id");
    config.vocab.emplace(token, id.get<int32_t>());
  }
  MOE_CHECK(m.contains("merges") && m["merges"].is_array(), source_,
            ": model.merges must be a list");
  config.merges.reserve(m["merges"].size());
  for (size_t i = 0; i < m["merges"].size(); ++i) {
    const json& merge = m["merges"][i];
    if (merge.is_string()) {  // "left right", the format before tokenizers 0.20
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ');
      MOE_CHECK(space != std::string::npos && s.find(' ', space + 1) == std::string::npos, source_,
                ": model.merges[", i, "] = '", s, "' is not two tokens");
      config.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else {
      MOE_CHECK(
          merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(),
          source_, ": model.merges[", i, "] = ", json_excerpt(merge), " is not two tokens");
      config.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    }
  }
  model_ = std::make_unique<BpeModel>(std::move(config));

  // ---- added tokens -------------------------------------------------------------------------
  const json added = root.value("added_tokens", json::array());
  MOE_CHECK(added.is_array(), source_, ": added_tokens must be a list");
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    r.check_object(added[i], field,
                   {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"});
    HfAddedToken token;
    MOE_CHECK(added[i].contains("id") && added[i]["id"].is_number_integer() &&
                  added[i]["id"].get<int64_t>() >= 0 &&
                  added[i]["id"].get<int64_t>() < (int64_t{1} << 31),
              source_, ": ", field, ".id = ", json_excerpt(Reader::member(added[i], "id")),
              " is not an id (0 .. 2^31 - 1)");
    token.id = added[i]["id"].get<int64_t>();
    token.content = r.text(added[i], "content", field);
    if (r.flag(added[i], "single_word", field, false))
      r.refuse(field + ".single_word", added[i]["single_word"], "false");
    token.lstrip = r.flag(added[i], "lstrip", field, false);
    token.rstrip = r.flag(added[i], "rstrip", field, false);
    token.special = r.flag(added[i], "special", field, false);
    token.normalized = r.flag(added[i], "normalized", field, !token.special);
    MOE_CHECK(!first_invalid_utf8(token.content), source_, ": ", field,
              ".content is not valid UTF-8");
    const auto index = static_cast<int32_t>(added_tokens_.size());
    if (token.normalized) {
      normalized_trie_->add(normalized(token.content), index);
    } else {
      raw_trie_->add(token.content, index);
    }
    added_tokens_.push_back(std::move(token));
  }

  // ---- ids: vocabulary size, decoding ---------------------------------------------------------
  for (const auto& [token, id] : model_->vocab())
    vocab_size_ = std::max(vocab_size_, int64_t{id} + 1);  // id is int32: + 1 in 64 bits
  for (const HfAddedToken& t : added_tokens_) vocab_size_ = std::max(vocab_size_, t.id + 1);
  // The tables below (and a model's embedding) have a row per id up to the largest, so one
  // stray huge id would allocate gigabytes: ids of a real tokenizer are dense (a few holes).
  const auto tokens = static_cast<int64_t>(model_->vocab().size() + added_tokens_.size());
  MOE_CHECK(vocab_size_ <= 2 * tokens + 1024, source_, ": the largest id, ", vocab_size_ - 1,
            ", is far beyond the ", tokens,
            " tokens of model.vocab and added_tokens (the ids of a tokenizer are dense; a "
            "corrupt id?)");
  decoded_bytes_.assign(vocab_size_, {});
  id_kind_.assign(vocab_size_, 0);
  // ByteLevel's decoder: a token's characters back to bytes; a token with a character outside
  // the mapping stays its own UTF-8 bytes.
  const auto decoded = [&](const std::string& token) {
    if (!byte_level_) return token;  // the SentencePiece kind's decoder runs over the tokens
    std::optional<std::string> bytes = byte_level_bytes(token);
    return bytes ? std::move(*bytes) : token;
  };
  // decode(skip_special_tokens) drops the ids whose token text is a special token's.
  std::unordered_set<std::string> special_texts;
  for (const HfAddedToken& t : added_tokens_)
    if (t.special) special_texts.insert(t.content);
  const auto set_token = [&](int64_t id, const std::string& text) {
    decoded_bytes_[id] = decoded(text);
    id_kind_[id] = special_texts.contains(text) ? 2 : 1;
  };
  for (const auto& [token, id] : model_->vocab()) set_token(id, token);
  // An added token's text wins over the vocabulary's; tokenizers (0.23) decodes a normalized
  // one as its normalized text.
  for (const HfAddedToken& t : added_tokens_)
    set_token(t.id, t.normalized ? normalized(t.content) : t.content);

  // ---- post-processor: the single-sequence template --------------------------------------------
  bool have_template = false;
  const auto add_processor = [&](const json& p, const std::string& field) {
    const std::string type = r.type(p, field);
    if (type == "ByteLevel") {  // offsets only
      r.check_object(p, field, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
      return;
    }
    if (type != "TemplateProcessing")
      r.refuse(field + ".type", p["type"], "ByteLevel, TemplateProcessing");
    MOE_CHECK(!have_template, source_, ": ", field, " is a second TemplateProcessing");
    have_template = true;
    r.check_object(p, field, {"type", "single", "pair", "special_tokens"});
    MOE_CHECK(p.contains("single") && p["single"].is_array(), source_, ": ", field,
              ".single must be a list");
    bool seen_sequence = false;
    for (size_t i = 0; i < p["single"].size(); ++i) {
      const json& item = p["single"][i];
      const std::string item_field = field + ".single[" + std::to_string(i) + "]";
      if (item.contains("Sequence")) {
        if (Reader::member(item["Sequence"], "id") != "A") r.refuse(item_field, item, "Sequence A");
        MOE_CHECK(!seen_sequence, source_, ": ", item_field, " is a second $A");
        seen_sequence = true;
      } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id")) {
        const json& name = item["SpecialToken"]["id"];
        MOE_CHECK(name.is_string(), source_, ": ", item_field,
                  ".SpecialToken.id must be a string, got ", json_excerpt(name));
        const std::string& special = name.get_ref<const std::string&>();
        const json& entry = Reader::member(Reader::member(p, "special_tokens"), special);
        MOE_CHECK(!entry.is_null(), source_, ": ", item_field, " names ", json_excerpt(name),
                  ", which special_tokens lacks");
        const json& ids = Reader::member(entry, "ids");
        MOE_CHECK(ids.is_array(), source_, ": ", field, ".special_tokens[", json_excerpt(name),
                  "].ids must be a list");
        for (const json& id : ids) {
          MOE_CHECK(
              id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < vocab_size_,
              source_, ": ", field, ".special_tokens[", json_excerpt(name), "] has the id ",
              json_excerpt(id), " outside the vocabulary");
          (seen_sequence ? template_suffix_ : template_prefix_).push_back(id.get<int64_t>());
        }
      } else {
        r.refuse(item_field, item, "SpecialToken, Sequence");
      }
    }
    MOE_CHECK(seen_sequence, source_, ": ", field, ".single has no $A");
  };
  const json post = root.value("post_processor", json());
  if (!post.is_null()) {
    if (r.type(post, "post_processor") == "Sequence") {
      r.check_object(post, "post_processor", {"type", "processors"});
      const json& processors = Reader::member(post, "processors");
      MOE_CHECK(processors.is_array(), source_, ": post_processor.processors must be a list");
      for (size_t i = 0; i < processors.size(); ++i)
        add_processor(processors[i], "post_processor.processors[" + std::to_string(i) + "]");
    } else {
      add_processor(post, "post_processor");
    }
  }

  // ---- decoder -------------------------------------------------------------------------------
  const json decoder = root.value("decoder", json());
  if (byte_level_) {
    if (decoder.is_null() || r.type(decoder, "decoder") != "ByteLevel")
      r.refuse("decoder", decoder, "ByteLevel, with a ByteLevel pre-tokenizer");
    r.check_object(decoder, "decoder", {"type", "add_prefix_space", "trim_offsets", "use_regex"});
  } else {
    using Kind = HfDecoderStep::Kind;
    const auto add_decoder = [&](const json& d, const std::string& field) {
      const std::string type = r.type(d, field);
      HfDecoderStep step{Kind::kFuse, {}, {}, 0, 0, false};
      if (type == "Replace") {
        r.check_object(d, field, {"type", "pattern", "content"});
        const json& pattern = Reader::member(d, "pattern");
        if (!(pattern.is_object() && pattern.size() == 1 && pattern.contains("String") &&
              pattern["String"].is_string() && !pattern["String"].get<std::string>().empty()))
          r.refuse(field + ".pattern", pattern, "{\"String\": a non-empty string}");
        step = {
            Kind::kReplace, pattern["String"].get<std::string>(), r.text(d, "content", field), 0, 0,
            false};
      } else if (type == "ByteFallback") {
        r.check_object(d, field, {"type"});
        step.kind = Kind::kByteFallback;
      } else if (type == "Fuse") {
        r.check_object(d, field, {"type"});
      } else if (type == "Strip") {
        r.check_object(d, field, {"type", "content", "start", "stop"});
        step.kind = Kind::kStrip;
        step.from = r.text(d, "content", field);
        for (const char* key : {"start", "stop"}) {
          const json& n = Reader::member(d, key);
          MOE_CHECK(n.is_number_unsigned(), source_, ": ", field, ".", key,
                    " must be a count, got ", json_excerpt(n));
          (std::string(key) == "start" ? step.start : step.stop) = n.get<size_t>();
        }
      } else if (type == "Metaspace") {
        r.check_object(
            d, field,
            {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"});
        step.kind = Kind::kMetaspace;
        step.from = r.text(d, "replacement", field);
        const json& scheme = Reader::member(d, "prepend_scheme");
        if (scheme.is_null()) {
          step.drop_first = r.flag(d, "add_prefix_space", field, true);
        } else if (scheme == "always" || scheme == "first" || scheme == "never") {
          step.drop_first = scheme != "never";
        } else {
          r.refuse(field + ".prepend_scheme", scheme, "always, first, never");
        }
      } else {
        r.refuse(field + ".type", d["type"], "Replace, ByteFallback, Fuse, Strip, Metaspace");
      }
      decoder_.push_back(std::move(step));
    };
    if (decoder.is_null()) {
      r.refuse("decoder", decoder,
               "Replace, ByteFallback, Fuse, Strip, Metaspace or a Sequence of them");
    } else if (r.type(decoder, "decoder") == "Sequence") {
      r.check_object(decoder, "decoder", {"type", "decoders"});
      const json& list = Reader::member(decoder, "decoders");
      MOE_CHECK(list.is_array(), source_, ": decoder.decoders must be a list");
      for (size_t i = 0; i < list.size(); ++i)
        add_decoder(list[i], "decoder.decoders[" + std::to_string(i) + "]");
    } else {
      add_decoder(decoder, "decoder");
    }
  }

  if (eos_token) {
    eos_id_ = token_to_id(*eos_token);
    MOE_CHECK(eos_id_.has_value(), source_, ": the eos_token '", *eos_token,
              "' is neither an added token nor in the vocabulary");
  }
}

HfBpeTokenizer::~HfBpeTokenizer() = default;

std::optional<int64_t> HfBpeTokenizer::token_to_id(std::string_view token) const {
  for (const HfAddedToken& t : added_tokens_)
    if (t.content == token) return t.id;
  if (const auto it = model_->vocab().find(std::string(token)); it != model_->vocab().end())
    return it->second;
  return std::nullopt;
}

// tokenizers' AddedVocabulary::find_matches: leftmost-longest matches, each widened by its
// lstrip / rstrip whitespace; the matching goes on from the match's own end.
void HfBpeTokenizer::split_added(std::string_view text, const AddedTokenTrie& trie,
                                 std::vector<Segment>& out) const {
  if (trie.empty()) {
    out.push_back({text, -1});
    return;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = 0;
    const int32_t token =
        trie.first_byte[static_cast<uint8_t>(text[pos])] ? trie.longest_at(text, pos, length) : -1;
    if (token < 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + length;
    const HfAddedToken& added = added_tokens_[token];
    if (added.lstrip) start = std::max(whitespace_run_start(text, start), start_offset);
    if (added.rstrip) stop = whitespace_run_end(text, stop);
    if (start_offset < start) out.push_back({text.substr(start_offset, start - start_offset), -1});
    out.push_back({text.substr(start, stop - start), token});
    start_offset = stop;
    pos += length;
  }
  if (start_offset < text.size()) out.push_back({text.substr(start_offset), -1});
}

bool HfBpeTokenizer::normalize(std::string_view text, std::string& out) const {
  if (normalizer_.empty()) return false;
  // The common cases without a copy: NFC alone on text below U+0300 (no byte >= 0xCC), whose
  // code points are all NFC-stable and compose with nothing.
  if (normalizer_.size() == 1 && normalizer_[0].kind == NormalizerStep::Kind::kNfc &&
      std::none_of(text.begin(), text.end(),
                   [](char c) { return static_cast<uint8_t>(c) >= 0xCC; }))
    return false;
  out = normalized(text);
  return true;
}

std::string HfBpeTokenizer::normalized(std::string_view text) const {
  std::string out(text);
  for (const NormalizerStep& step : normalizer_) {
    switch (step.kind) {
      case NormalizerStep::Kind::kNfc:
        out = nfc(out);
        break;
      case NormalizerStep::Kind::kPrepend:  // tokenizers prepends to non-empty text only
        if (!out.empty()) out.insert(0, step.text);
        break;
      case NormalizerStep::Kind::kReplace: {
        if (out.find(step.text) == std::string::npos) break;
        std::string replaced;
        replaced.reserve(out.size() + out.size() / 4);
        size_t pos = 0;
        for (size_t hit; (hit = out.find(step.text, pos)) != std::string::npos;
             pos = hit + step.text.size()) {
          replaced.append(out, pos, hit - pos);
          replaced += step.replacement;
        }
        replaced.append(out, pos);
        out = std::move(replaced);
        break;
      }
    }
  }
  return out;
}

void HfBpeTokenizer::encode_normalized(std::string_view text, bool at_start,
                                       std::vector<int64_t>& ids) const {
  std::string normalized;
  if (normalize(text, normalized)) text = normalized;
  const auto pieces_to_ids = [&](std::string_view stretch, bool stretch_at_start) {
    pretokenizer_->run(
        stretch, [&](std::string_view piece) { model_->encode_piece(piece, ids); },
        stretch_at_start);
  };
  if (normalized_trie_->empty()) {
    pieces_to_ids(text, at_start);
    return;
  }
  std::vector<Segment> segments;
  split_added(text, *normalized_trie_, segments);
  for (const Segment& s : segments) {
    if (s.added >= 0) {
      ids.push_back(added_tokens_[s.added].id);
    } else {
      pieces_to_ids(s.text, at_start && s.text.data() == text.data());
    }
  }
}

std::vector<int64_t> HfBpeTokenizer::encode(std::string_view text) const {
  return encode(text, false);
}

std::vector<int64_t> HfBpeTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const std::optional<size_t> bad = first_invalid_utf8(text);
  MOE_CHECK(!bad, description(), ": the text is not valid UTF-8 at byte ", bad.value_or(0));
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = template_prefix_;
  std::vector<Segment> segments;
  split_added(text, *raw_trie_, segments);
  for (const Segment& s : segments) {
    if (s.added >= 0) {
      ids.push_back(added_tokens_[s.added].id);
    } else {
      encode_normalized(s.text, s.text.data() == text.data(), ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), template_suffix_.begin(), template_suffix_.end());
  return ids;
}

std::string HfBpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  return decode(ids, false);
}

std::string HfBpeTokenizer::decode(const std::vector<int64_t>& ids,
                                   bool skip_special_tokens) const {
  std::string bytes;
  std::vector<std::string> tokens;  // the SentencePiece kind's
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids[i];
    MOE_CHECK(id >= 0 && id < vocab_size_ && id_kind_[id] != 0, description(), ": the id ", id,
              " at position ", i, " is not in the vocabulary (", vocab_size_, " ids)");
    if (skip_special_tokens && id_kind_[id] == 2) continue;
    if (byte_level_) {
      bytes += decoded_bytes_[id];
    } else {
      tokens.push_back(decoded_bytes_[id]);
    }
  }
  if (!byte_level_) return run_hf_decoder(decoder_, std::move(tokens));
  return utf8_lossy(bytes);
}

}  // namespace moe::data
