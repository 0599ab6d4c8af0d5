// The BPE model of a Hugging Face byte-level tokenizer (hf_bpe_tokenizer.h): one pre-tokenized
// piece -> its token ids, as `tokenizers`' models::bpe::BPE computes them.
//
// The piece's bytes start as one symbol each: the vocabulary id of the byte's character in
// GPT-2's byte <-> unicode mapping (byte_unicode.h). Then, repeatedly, the adjacent pair of
// lowest merge rank is replaced by its merged token (ties: the leftmost pair), until no adjacent
// pair has a merge; ranks are the merges' positions in tokenizer.json. (A priority queue of
// (rank, position), stale entries skipped, as tokenizers' Word::merge_all.)
// ignore_merges (Llama-3): a piece that is itself a vocabulary token is that one token, merges
// or not. A byte whose character is not in the vocabulary becomes unk_token (consecutive ones
// fused into one when fuse_unk), or is dropped when there is no unk_token, as in tokenizers.
//
// Without byte_level (the SentencePiece kind: Llama-2, Mixtral), the vocabulary is written in
// plain UTF-8 and the piece starts as one symbol per character: the character's token, else
// (byte_fallback) one "<0xXX>" token per UTF-8 byte when all of them are in the vocabulary,
// else unk_token. As in tokenizers' BPE::merge_word, a pending unk is added only when the next
// in-vocabulary character comes (or at the end), so byte tokens can come before it.
//
// Results of pieces shorter than kMaxCachedBytes are cached (piece -> ids) in 64 shards, each
// behind its own mutex, so encode_piece is const and safe from several threads; a full shard is
// emptied and refilled.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace moe::data {

// A string hash that also takes string_views, for lookups without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class BpeModel {
 public:
  struct Config {
    std::unordered_map<std::string, int32_t> vocab;           // token (mapped chars) -> id
    std::vector<std::pair<std::string, std::string>> merges;  // in rank order
    std::optional<std::string> unk_token;
    bool fuse_unk = false;
    bool ignore_merges = false;
    bool byte_level = true;       // false: characters in plain UTF-8 (see above)
    bool byte_fallback = false;   // only without byte_level
    std::string field = "model";  // where the config came from, for messages
  };
  static constexpr size_t kMaxCachedBytes = 256;

  explicit BpeModel(Config config);
  ~BpeModel();
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of `piece` (raw UTF-8 bytes of one pre-tokenized piece) to `ids`.
  void encode_piece(std::string_view piece, std::vector<int64_t>& ids) const;

  // The vocabulary: token (in mapped characters) <-> id.
  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  // ignore_merges' whole-piece lookup, else merge_word; the cache holds what this gives.
  void encode_piece_uncached(std::string_view piece, std::vector<int32_t>& out) const;
  void merge_word(std::string_view piece, std::vector<int32_t>& out) const;
  // The initial symbols of `piece` without byte_level.
  void character_symbols(std::string_view piece, std::vector<int32_t>& out) const;

  struct PairTable;  // (left id, right id) -> (rank, merged id)
  struct Cache;
  std::unordered_map<std::string, int32_t> vocab_;
  // raw bytes -> id, for ignore_merges
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> bytes_vocab_;
  std::unique_ptr<PairTable> merges_;
  int32_t byte_ids_[256];  // id of each byte's character; -1 if not in the vocabulary
  // Without byte_level: single-character tokens, and the "<0xXX>" tokens of byte_fallback.
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> char_vocab_;
  int32_t fallback_ids_[256];  // -1: none (or no byte_fallback)
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  bool byte_level_ = true;
  std::unique_ptr<Cache> cache_;
};

}  // namespace moe::data
