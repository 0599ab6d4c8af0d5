#include "moe/data/bpe_model.h"

#include <algorithm>
#include <functional>
#include <mutex>

#include "moe/core/error.h"
#include "moe/data/byte_unicode.h"

namespace moe::data {
namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

// Open addressing with linear probing over a power-of-two table at most half full: the merge
// lookups are the inner loop of BPE.
struct BpeModel::PairTable {
  struct Slot {
    uint64_t key = ~uint64_t{0};  // empty
    uint32_t rank = 0;
    int32_t merged = -1;
  };
  std::vector<Slot> slots;
  uint64_t mask = 0;

  explicit PairTable(size_t count) {
    size_t size = 16;
    while (size < 2 * count) size *= 2;
    slots.resize(size);
    mask = size - 1;
  }
  static size_t hash(uint64_t key) {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 17);
  }
  // A pair already there is overwritten.
  void insert(uint64_t key, uint32_t rank, int32_t merged) {
    for (size_t i = hash(key) & mask;; i = (i + 1) & mask) {
      if (slots[i].key == key || slots[i].key == ~uint64_t{0}) {
        slots[i] = {key, rank, merged};
        return;
      }
    }
  }
  const Slot* find(uint64_t key) const {
    for (size_t i = hash(key) & mask;; i = (i + 1) & mask) {
      if (slots[i].key == key) return &slots[i];
      if (slots[i].key == ~uint64_t{0}) return nullptr;
    }
  }
};

struct BpeModel::Cache {
  static constexpr size_t kShards = 64;
  static constexpr size_t kShardCapacity = 8192;
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  Shard shards[kShards];
};

BpeModel::BpeModel(Config config)
    : vocab_(std::move(config.vocab)),
      merges_(std::make_unique<PairTable>(config.merges.size())),
      fuse_unk_(config.fuse_unk),
      ignore_merges_(config.ignore_merges),
      byte_level_(config.byte_level),
      cache_(std::make_unique<Cache>()) {
  const std::string& field = config.field;
  MOE_CHECK(!(config.byte_level && config.byte_fallback), field,
            ".byte_fallback needs a vocabulary in plain UTF-8, not a byte-level one");
  for (int b = 0; b < 256; ++b) {
    std::string character;
    append_utf8(byte_to_unicode(static_cast<uint8_t>(b)), character);
    const auto it = vocab_.find(character);
    byte_ids_[b] = it == vocab_.end() || !byte_level_ ? -1 : it->second;
    // tokenizers looks byte b up as format!("<{b:#04X}>"): "<0x0A>".
    static const char kHex[] = "0123456789ABCDEF";
    const std::string fallback = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
    const auto f = vocab_.find(fallback);
    fallback_ids_[b] = f == vocab_.end() || !config.byte_fallback ? -1 : f->second;
  }
  if (!byte_level_) {
    for (const auto& [token, id] : vocab_) {
      if (token.empty()) continue;
      const auto lead = static_cast<uint8_t>(token[0]);
      const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
      if (token.size() == length) char_vocab_.emplace(token, id);
    }
  }
  if (config.unk_token) {
    const auto it = vocab_.find(*config.unk_token);
    MOE_CHECK(it != vocab_.end(), field, ".unk_token '", *config.unk_token,
              "' is not in the vocabulary");
    unk_id_ = it->second;
  }
  const auto id_of = [&](const std::string& token, size_t rank) {
    const auto it = vocab_.find(token);
    MOE_CHECK(it != vocab_.end(), field, ".merges[", rank, "] uses '", token,
              "', which is not in the vocabulary");
    return it->second;
  };
  for (size_t rank = 0; rank < config.merges.size(); ++rank) {
    const auto& [left, right] = config.merges[rank];
    const int32_t merged = id_of(left + right, rank);
    // tokenizers builds its map in rank order, so a repeated pair keeps its last rank.
    merges_->insert(pair_key(id_of(left, rank), id_of(right, rank)), static_cast<uint32_t>(rank),
                    merged);
  }
  if (ignore_merges_) {
    for (const auto& [token, id] : vocab_) {
      if (!byte_level_) {
        bytes_vocab_.emplace(token, id);
      } else if (std::optional<std::string> bytes = byte_level_bytes(token)) {
        bytes_vocab_.emplace(*bytes, id);
      }
    }
  }
}

BpeModel::~BpeModel() = default;

// tokenizers' BPE::merge_word without byte-level: a symbol per character (valid UTF-8).
void BpeModel::character_symbols(std::string_view piece, std::vector<int32_t>& out) const {
  int32_t pending_unk = -1;  // an unk_token not yet added (tokenizers' `unk`)
  for (size_t i = 0; i < piece.size();) {
    const auto lead = static_cast<uint8_t>(piece[i]);
    const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    const std::string_view character = piece.substr(i, length);
    i += length;
    if (const auto it = char_vocab_.find(character); it != char_vocab_.end()) {
      if (pending_unk >= 0) out.push_back(pending_unk);
      pending_unk = -1;
      out.push_back(it->second);
      continue;
    }
    const bool all_bytes = std::all_of(character.begin(), character.end(), [&](char b) {
      return fallback_ids_[static_cast<uint8_t>(b)] >= 0;
    });
    if (all_bytes) {
      for (const char b : character) out.push_back(fallback_ids_[static_cast<uint8_t>(b)]);
      continue;
    }
    if (unk_id_ < 0) continue;
    if (pending_unk >= 0 && !fuse_unk_) out.push_back(pending_unk);
    pending_unk = unk_id_;
  }
  if (pending_unk >= 0) out.push_back(pending_unk);
}

void BpeModel::merge_word(std::string_view piece, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours among the live symbols; -1 at the ends
    bool live;
  };
  struct Candidate {
    uint32_t rank;
    uint32_t pos;  // the left symbol
    int32_t merged;
    // std::push_heap keeps the largest on top: "larger" = lower rank, then further left.
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> queue;
  thread_local std::vector<int32_t> initial;
  symbols.clear();
  if (!byte_level_) {
    initial.clear();
    character_symbols(piece, initial);
    for (const int32_t id : initial) symbols.push_back({id, 0, 0, true});
  }
  // Byte-level initial symbols: one per byte, unknown ones as unk_token (fused) or dropped.
  bool previous_unk = false;
  for (const char ch : byte_level_ ? piece : std::string_view()) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(ch)];
    if (id >= 0) {
      symbols.push_back({id, 0, 0, true});
      previous_unk = false;
    } else if (unk_id_ >= 0) {
      if (!(fuse_unk_ && previous_unk)) symbols.push_back({unk_id_, 0, 0, true});
      previous_unk = true;
    }
  }
  const auto n = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < n ? i + 1 : -1;
  }
  queue.clear();
  const auto push_pair = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    if (const PairTable::Slot* m = merges_->find(pair_key(symbols[left].id, symbols[right].id))) {
      queue.push_back({m->rank, static_cast<uint32_t>(left), m->merged});
      std::push_heap(queue.begin(), queue.end());
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end());
    const Candidate top = queue.back();
    queue.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.live || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // A stale entry: the pair at this position changed since it was queued.
    const PairTable::Slot* m = merges_->find(pair_key(left.id, right.id));
    if (m == nullptr || m->merged != top.merged) continue;
    left.id = top.merged;
    right.live = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = static_cast<int32_t>(top.pos);
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(static_cast<int32_t>(top.pos));
  }
  for (const Symbol& s : symbols)
    if (s.live) out.push_back(s.id);
}

void BpeModel::encode_piece_uncached(std::string_view piece, std::vector<int32_t>& word) const {
  if (ignore_merges_) {
    if (const auto it = bytes_vocab_.find(piece); it != bytes_vocab_.end()) {
      word.push_back(it->second);
      return;
    }
  }
  merge_word(piece, word);
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int64_t>& ids) const {
  if (piece.empty()) return;
  thread_local std::vector<int32_t> word;
  word.clear();
  if (piece.size() >= kMaxCachedBytes) {
    encode_piece_uncached(piece, word);
    ids.insert(ids.end(), word.begin(), word.end());
    return;
  }
  Cache::Shard& shard = cache_->shards[StringHash{}(piece) % Cache::kShards];
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (const auto it = shard.map.find(piece); it != shard.map.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  encode_piece_uncached(piece, word);
  ids.insert(ids.end(), word.begin(), word.end());
  std::lock_guard<std::mutex> lock(shard.mutex);
  if (shard.map.size() >= Cache::kShardCapacity) shard.map.clear();
  shard.map.emplace(std::string(piece), word);
}

}  // namespace moe::data
