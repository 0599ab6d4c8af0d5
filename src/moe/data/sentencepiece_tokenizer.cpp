#include "moe/data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <limits>

#include "moe/core/error.h"
#include "moe/data/byte_unicode.h"

namespace moe::data {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path, Kind kind)
    : path_(path),
      kind_(kind),
      processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  std::filesystem::path file = path;
  if (std::filesystem::is_directory(file)) file /= "tokenizer.model";
  path_ = file.string();
  MOE_CHECK(std::filesystem::is_regular_file(file), "no SentencePiece model (tokenizer.model) at ",
            path);
  const sentencepiece::util::Status status = processor_->Load(path_);
  MOE_CHECK(status.ok(), path_,
            " is not a SentencePiece model that this library reads: ", status.ToString());
  pieces_ = processor_->GetPieceSize();
  vocab_size_ = static_cast<size_t>(pieces_);
  bos_ = processor_->bos_id();
  eos_ = processor_->eos_id();
  pad_ = processor_->pad_id();
  if (kind_ == Kind::kLlama2) {
    // Megatron's tokenize puts the bos id first; a model without one would give -1.
    MOE_CHECK(bos_ >= 0, path_, ": Llama2Tokenizer needs a model with a BOS piece (bos_id is -1)");
    if (eos_ >= 0) eod_ = eos_;
    return;
  }
  // Megatron's _SentencePieceTokenizer._initalize: the special tokens, new ids after the pieces.
  const auto add_special = [&](const std::string& text) {
    int64_t id = processor_->PieceToId(text);
    // PieceToId gives the unk id for an unknown piece; only a piece of that very text counts.
    if (id < 0 || id >= pieces_ || processor_->IdToPiece(static_cast<int>(id)) != text) {
      const auto known = std::find_if(special_.begin(), special_.end(),
                                      [&](const auto& s) { return s.first == text; });
      id = known != special_.end() ? known->second : static_cast<int64_t>(vocab_size_++);
    }
    if (std::none_of(special_.begin(), special_.end(),
                     [&](const auto& s) { return s.first == text; }))
      special_.emplace_back(text, id);
    return id;
  };
  const auto piece_or = [&](int id, const char* fallback) {
    return id >= 0 && id < pieces_ ? processor_->IdToPiece(id) : std::string(fallback);
  };
  add_special("<CLS>");
  add_special("<SEP>");
  eod_ = add_special("<EOD>");
  add_special("<MASK>");
  pad_ = add_special(piece_or(processor_->pad_id(), "<PAD>"));
  bos_ = add_special(piece_or(processor_->bos_id(), "<BOS>"));
  eos_ = add_special(piece_or(processor_->eos_id(), "<EOS>"));
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::string SentencePieceTokenizer::description() const {
  return std::string(kind_ == Kind::kLlama2 ? "Llama2Tokenizer(" : "SentencePieceTokenizer(") +
         path_ + ")";
}

void SentencePieceTokenizer::encode_plain(std::string_view text, std::vector<int64_t>& ids) const {
  if (text.empty()) return;
  std::vector<int> piece_ids;
  const sentencepiece::util::Status status = processor_->Encode(text, &piece_ids);
  MOE_CHECK(status.ok(), description(), ": encoding failed: ", status.ToString());
  ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
}

std::vector<int64_t> SentencePieceTokenizer::encode(std::string_view text) const {
  const std::optional<size_t> bad = first_invalid_utf8(text);
  MOE_CHECK(!bad, description(), ": the text is not valid UTF-8 at byte ", bad.value_or(0));
  std::vector<int64_t> ids;
  if (kind_ == Kind::kLlama2) {
    encode_plain(text, ids);
    return ids;
  }
  // NeMo's tokenize, as Megatron has it: the earliest special token next, its stretch before.
  constexpr size_t kNone = std::numeric_limits<size_t>::max();
  std::vector<size_t> next;  // each token's next occurrence at or after idx (kNone: no more)
  for (const auto& [token, id] : special_) next.push_back(text.find(token));
  size_t idx = 0;
  while (true) {
    size_t best = kNone, best_at = kNone;
    for (size_t k = 0; k < special_.size(); ++k) {
      if (next[k] != kNone && next[k] < idx) next[k] = text.find(special_[k].first, idx);
      if (next[k] != kNone && next[k] < best_at) best = k, best_at = next[k];
    }
    if (best == kNone) break;
    encode_plain(text.substr(idx, best_at - idx), ids);
    ids.push_back(special_[best].second);
    idx = best_at + special_[best].first.size();
  }
  encode_plain(text.substr(idx), ids);
  return ids;
}

std::vector<int64_t> SentencePieceTokenizer::encode_document(std::string_view text) const {
  if (kind_ == Kind::kSentencePiece) return encode(text);
  std::vector<int64_t> ids{bos_};  // Megatron's Llama2Tokenizer.tokenize(text, bos=True)
  const std::vector<int64_t> rest = encode(text);
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
}

std::string SentencePieceTokenizer::decode_plain(const std::vector<int64_t>& ids, size_t begin,
                                                 size_t end) const {
  std::vector<int> piece_ids;
  for (size_t i = begin; i < end; ++i) {
    MOE_CHECK(ids[i] >= 0 && ids[i] < pieces_, description(), ": the id ", ids[i], " at position ",
              i, " is not in the vocabulary (", vocab_size_, " ids)");
    piece_ids.push_back(static_cast<int>(ids[i]));
  }
  std::string text;
  const sentencepiece::util::Status status = processor_->Decode(piece_ids, &text);
  MOE_CHECK(status.ok(), description(), ": decoding failed: ", status.ToString());
  return text;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  if (kind_ == Kind::kLlama2) return decode_plain(ids, 0, ids.size());
  // NeMo's detokenize: "<decoded before> <special> " for each special id.
  std::string text;
  size_t last = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    // Megatron's id -> text map keeps the last text given an id.
    const auto special = std::find_if(special_.rbegin(), special_.rend(),
                                      [&](const auto& s) { return s.second == ids[i]; });
    if (special == special_.rend()) continue;
    text += decode_plain(ids, last, i) + " " + special->first + " ";
    last = i + 1;
  }
  return text + decode_plain(ids, last, ids.size());
}

}  // namespace moe::data
