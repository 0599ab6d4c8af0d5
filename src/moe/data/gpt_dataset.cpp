// Megatron's GPTDataset: index building, the index cache and sample reads (gpt_dataset.h).
#include "moe/data/gpt_dataset.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>

#include "moe/core/crc32c.h"
#include "moe/core/error.h"
#include "moe/data/index_npy.h"
#include "moe/data/numpy_random.h"

namespace moe::data {

namespace {

constexpr int64_t kExtraToken = 1;  // add_extra_token_to_sequence: samples of S + 1 tokens

// _build_document_index: the documents repeated num_epochs times and shuffled as one array;
// with a separate final epoch, the first num_epochs - 1 epochs and the last one separately.
std::vector<int32_t> build_document_index(int64_t begin, int64_t end, int64_t num_epochs,
                                          NumpyRandomState& random, bool separate_final_epoch) {
  if (separate_final_epoch && num_epochs > 1) {
    std::vector<int32_t> first = build_document_index(begin, end, num_epochs - 1, random, false);
    const std::vector<int32_t> last = build_document_index(begin, end, 1, random, false);
    first.insert(first.end(), last.begin(), last.end());
    return first;
  }
  std::vector<int32_t> index;
  index.reserve(static_cast<size_t>(num_epochs * (end - begin)));
  for (int64_t e = 0; e < num_epochs; ++e)
    for (int64_t d = begin; d < end; ++d) index.push_back(static_cast<int32_t>(d));
  random.shuffle(std::span<int32_t>(index));
  return index;
}

// _build_shuffle_index: arange(first) shuffled, then arange(first, total) shuffled.
std::vector<int64_t> build_shuffle_index(int64_t first, int64_t total, NumpyRandomState& random) {
  std::vector<int64_t> index(static_cast<size_t>(total));
  std::iota(index.begin(), index.end(), int64_t{0});
  random.shuffle(std::span<int64_t>(index.data(), static_cast<size_t>(first)));
  if (first < total)
    random.shuffle(std::span<int64_t>(index.data() + first, static_cast<size_t>(total - first)));
  return index;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "cannot open ", path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

std::string description_hash(const std::string& text) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a, 64-bit offset basis and prime
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(hash));
  return out;
}

int64_t gpt_num_epochs(int64_t tokens_per_epoch, std::optional<int64_t> num_samples,
                       int64_t sequence_length) {
  if (!num_samples) return 1;
  MOE_CHECK(tokens_per_epoch > 0, "GPTDataset: the split holds no tokens, but ", *num_samples,
            " samples are requested");
  const int64_t requested = *num_samples * sequence_length + kExtraToken;
  return std::max<int64_t>(1, (requested + tokens_per_epoch - 1) / tokens_per_epoch);
}

std::vector<int64_t> build_sample_index(std::span<const int32_t> sequence_lengths,
                                        std::span<const int32_t> document_index,
                                        int64_t sequence_length, int64_t num_epochs,
                                        int64_t tokens_per_epoch) {
  const int64_t num_samples = (num_epochs * tokens_per_epoch - kExtraToken) / sequence_length;
  std::vector<int64_t> index(static_cast<size_t>(2 * (num_samples + 1)));
  const int64_t last = static_cast<int64_t>(document_index.size()) - 1;
  int64_t position = 0;  // into document_index
  int64_t offset = 0;    // token offset within that document
  const auto length_at = [&](int64_t p) {
    return int64_t{sequence_lengths[static_cast<size_t>(document_index[static_cast<size_t>(p)])]};
  };
  for (int64_t sample = 1; sample <= num_samples; ++sample) {
    // Walk S + 1 tokens forward; the sample ends on the token it shares with the next one.
    int64_t remaining = sequence_length + kExtraToken;
    while (remaining != 0) {
      const int64_t available = length_at(position) - offset;
      remaining -= available;
      if (remaining <= 0) {
        offset += remaining + available - kExtraToken;
        remaining = 0;
      } else if (position == last) {
        // Only the final sample can run out of documents; it ends on the last token.
        MOE_CHECK(sample == num_samples, "GPTDataset: sample index ran out of documents");
        offset = length_at(position) - kExtraToken;
        break;
      } else {
        ++position;
        offset = 0;
      }
    }
    index[static_cast<size_t>(2 * sample)] = position;
    index[static_cast<size_t>(2 * sample + 1)] = offset;
  }
  return index;
}

GPTIndices build_gpt_indices(std::span<const int32_t> sequence_lengths, int64_t begin, int64_t end,
                             std::optional<int64_t> num_samples, int64_t sequence_length,
                             int64_t random_seed) {
  MOE_CHECK(sequence_length >= 1, "GPTDataset: --seq-length must be positive, got ",
            sequence_length);
  MOE_CHECK(0 <= begin && begin <= end && end <= static_cast<int64_t>(sequence_lengths.size()),
            "GPTDataset: documents [", begin, ", ", end, ") outside the corpus of ",
            sequence_lengths.size());
  MOE_CHECK(!num_samples || *num_samples >= 0, "GPTDataset: negative sample count ", *num_samples);
  int64_t tokens_per_epoch = 0;
  for (int64_t d = begin; d < end; ++d) tokens_per_epoch += sequence_lengths[size_t(d)];
  MOE_CHECK(tokens_per_epoch > kExtraToken, "GPTDataset: documents [", begin, ", ", end, ") hold ",
            tokens_per_epoch, " tokens, too few for any sample (is the split empty?)");

  GPTIndices out;
  out.num_epochs = gpt_num_epochs(tokens_per_epoch, num_samples, sequence_length);
  const int64_t samples_per_epoch = (tokens_per_epoch - kExtraToken) / sequence_length;
  int64_t samples_before_final_epoch = 0;
  if (out.num_epochs > 1) {
    samples_before_final_epoch =
        ((out.num_epochs - 1) * tokens_per_epoch - kExtraToken) / sequence_length;
    const int64_t from_final_epoch = *num_samples - samples_before_final_epoch;
    MOE_CHECK(from_final_epoch >= 0 && from_final_epoch <= samples_per_epoch + 1,
              "GPTDataset: inconsistent epoch count");
    // Megatron's threshold: a final epoch used for less than 80% is shuffled on its own.
    out.separate_final_epoch =
        from_final_epoch < static_cast<int64_t>(0.80 * static_cast<double>(samples_per_epoch));
  }
  MOE_CHECK(out.num_epochs * (end - begin) <= std::numeric_limits<int32_t>::max(),
            "GPTDataset: ", out.num_epochs, " epochs of ", end - begin,
            " documents exceed the int32 document index");

  NumpyRandomState random(random_seed);
  out.document_index =
      build_document_index(begin, end, out.num_epochs, random, out.separate_final_epoch);
  out.sample_index = build_sample_index(sequence_lengths, out.document_index, sequence_length,
                                        out.num_epochs, tokens_per_epoch);
  const int64_t total = static_cast<int64_t>(out.sample_index.size() / 2) - 1;
  out.shuffle_index = build_shuffle_index(
      out.separate_final_epoch ? samples_before_final_epoch : total, total, random);
  return out;
}

GPTDataset::GPTDataset(std::shared_ptr<const TokenSequences> corpus, std::string dataset_path,
                       std::pair<int64_t, int64_t> documents, std::optional<int64_t> num_samples,
                       Split split, GPTDatasetConfig config)
    : corpus_(std::move(corpus)),
      documents_(documents),
      num_samples_(num_samples),
      split_(split),
      config_(std::move(config)) {
  MOE_CHECK(corpus_ != nullptr, "GPTDataset: no corpus");
  const std::span<const int32_t> lengths = corpus_->sequence_lengths();
  const int64_t num_sequences = corpus_->num_sequences();
  // Megatron's GPT dataset addresses sequences; the corpus must describe them consistently.
  MOE_CHECK(static_cast<int64_t>(lengths.size()) == num_sequences, "GPTDataset ",
            corpus_->description(), ": ", lengths.size(), " sequence lengths for ", num_sequences,
            " sequences");
  const std::span<const int64_t> doc_bounds = corpus_->document_indices();
  MOE_CHECK(!doc_bounds.empty() && doc_bounds.front() == 0 && doc_bounds.back() == num_sequences,
            "GPTDataset ", corpus_->description(),
            ": document indices must run from 0 to the number of sequences (", num_sequences, ")");
  MOE_CHECK(num_sequences <= std::numeric_limits<int32_t>::max(), "GPTDataset ",
            corpus_->description(), ": ", num_sequences,
            " sequences exceed Megatron's int32 document ids");
  MOE_CHECK(config_.sequence_length >= 1, "GPTDataset: --seq-length must be positive, got ",
            config_.sequence_length);
  MOE_CHECK(config_.random_seed >= 0 && config_.random_seed <= int64_t{0xffffffff},
            "GPTDataset: --seed must be between 0 and 2**32 - 1 (numpy's RandomState), got ",
            config_.random_seed);

  int64_t tokens = 0;
  for (int64_t d = documents.first; d < documents.second && d < num_sequences; ++d)
    tokens += lengths[size_t(d)];
  nlohmann::ordered_json desc;
  desc["class"] = "GPTDataset";
  desc["dataset_path"] = dataset_path;
  desc["num_samples"] = num_samples ? nlohmann::ordered_json(*num_samples) : nullptr;
  desc["index_split"] = split_name(split);
  desc["random_seed"] = config_.random_seed;
  desc["sequence_length"] = config_.sequence_length;
  desc["split"] = config_.split;
  desc["documents"] = {documents.first, documents.second};
  desc["num_sequences"] = num_sequences;
  desc["num_tokens"] = tokens;
  desc["sequence_lengths_crc32c"] = crc32c(lengths.data(), lengths.size_bytes());
  desc["add_extra_token_to_sequence"] = true;
  desc["drop_last_partial_sequence"] = true;
  description_ = desc.dump(4);
  hash_ = description_hash(description_);

  if (!config_.cache_dir.empty() && load_cache(tokens)) {
    loaded_from_cache_ = true;
    return;
  }
  indices_ = build_gpt_indices(lengths, documents.first, documents.second, num_samples,
                               config_.sequence_length, config_.random_seed);
  if (!config_.cache_dir.empty()) save_cache();
}

std::string GPTDataset::cache_path(const std::string& suffix) const {
  MOE_CHECK(!config_.cache_dir.empty(), "GPTDataset: no cache folder");
  return (std::filesystem::path(config_.cache_dir) /
          (hash_ + "-GPTDataset-" + split_name(split_) + "-" + suffix))
      .string();
}

void GPTDataset::save_cache() const {
  std::error_code error;
  std::filesystem::create_directories(config_.cache_dir, error);
  MOE_CHECK(!error, "GPTDataset: cannot create the index cache folder ", config_.cache_dir, ": ",
            error.message(), " (choose a writable one with --data-cache-path)");
  const auto widen = [](const std::vector<int32_t>& v) {
    return std::vector<int64_t>(v.begin(), v.end());
  };
  const int64_t rows = static_cast<int64_t>(indices_.sample_index.size() / 2);
  // Megatron's dtypes: int32 sample index while the values fit (helpers.build_sample_idx),
  // uint32 shuffle index below 2^32 - 1 samples.
  int32_t max_length = 0;
  for (int32_t l : corpus_->sequence_lengths()) max_length = std::max(max_length, l);
  const int64_t sample_max =
      std::max<int64_t>(static_cast<int64_t>(indices_.document_index.size()), max_length);
  const IndexDType sample_dtype =
      sample_max <= std::numeric_limits<int32_t>::max() ? IndexDType::i32 : IndexDType::i64;
  const IndexDType shuffle_dtype =
      rows - 1 >= int64_t{0xffffffff} - 1 ? IndexDType::i64 : IndexDType::u32;
  nlohmann::ordered_json checksums;
  checksums["document_index.npy"] = write_index_npy(
      cache_path("document_index.npy"), IndexDType::i32,
      {static_cast<int64_t>(indices_.document_index.size())}, widen(indices_.document_index));
  checksums["sample_index.npy"] = write_index_npy(cache_path("sample_index.npy"), sample_dtype,
                                                  {rows, 2}, indices_.sample_index);
  checksums["shuffle_index.npy"] =
      write_index_npy(cache_path("shuffle_index.npy"), shuffle_dtype, {indices_.num_samples()},
                      indices_.shuffle_index);
  write_index_cache_manifest([this](const std::string& f) { return cache_path(f); }, checksums,
                             description_);
}

bool GPTDataset::load_cache(int64_t tokens_per_epoch) {
  const char* files[] = {"description.txt", "document_index.npy", "sample_index.npy",
                         "shuffle_index.npy", "checksums.json"};
  for (const char* f : files)
    if (!std::filesystem::is_regular_file(cache_path(f))) return false;  // build (again)

  const std::string refuse = " Remove the files " + cache_path("*") + " to rebuild the indices.";
  MOE_CHECK(read_text_file(cache_path("description.txt")) == description_,
            "GPTDataset: the index cache ", cache_path("description.txt"),
            " describes another dataset than this one (same name hash, different description).",
            refuse);
  nlohmann::json checksums;
  try {
    checksums = nlohmann::json::parse(read_text_file(cache_path("checksums.json")));
  } catch (const nlohmann::json::exception& e) {
    MOE_FAIL("GPTDataset: the index cache ", cache_path("checksums.json"), " is not valid JSON (",
             e.what(), ").", refuse);
  }
  const char* names[] = {"document_index.npy", "sample_index.npy", "shuffle_index.npy"};
  std::vector<IndexArray> arrays = read_checked_index_files(
      "GPTDataset", names, checksums, [this](const std::string& f) { return cache_path(f); },
      refuse);

  // The shapes and value ranges this dataset needs (a cache that passes is safe to read).
  const int64_t epochs = gpt_num_epochs(tokens_per_epoch, num_samples_, config_.sequence_length);
  const int64_t num_docs = documents_.second - documents_.first;
  const int64_t total =
      (epochs * tokens_per_epoch - kExtraToken) / config_.sequence_length;  // samples built
  const auto bad = [&](const char* name) {
    MOE_FAIL("GPTDataset: the index cache file ", cache_path(name),
             " does not hold the index this dataset needs.", refuse);
  };
  if (arrays[0].shape != std::vector<int64_t>{epochs * num_docs}) bad(names[0]);
  if (arrays[1].shape != std::vector<int64_t>{total + 1, 2}) bad(names[1]);
  if (arrays[2].shape != std::vector<int64_t>{total}) bad(names[2]);
  for (int64_t v : arrays[0].values)
    if (v < documents_.first || v >= documents_.second) bad(names[0]);
  for (size_t r = 0; r < arrays[1].values.size(); r += 2)
    if (arrays[1].values[r] < 0 || arrays[1].values[r] >= epochs * num_docs ||
        arrays[1].values[r + 1] < 0)
      bad(names[1]);
  for (int64_t v : arrays[2].values)
    if (v < 0 || v >= total) bad(names[2]);
  // Every sample must be what read_sample reads: sample_length() tokens, each piece inside its
  // sequence. (The ranges above alone let a re-signed or hand-made cache point past a
  // document, which reading would only find later, without naming the cache.)
  const std::span<const int32_t> lengths = corpus_->sequence_lengths();
  const std::vector<int64_t>& rows = arrays[1].values;
  for (int64_t j = 0; j < total; ++j) {
    const int64_t first = rows[2 * j], first_offset = rows[2 * j + 1];
    const int64_t last = rows[2 * j + 2], last_offset = rows[2 * j + 3];
    if (last < first) bad(names[1]);
    int64_t tokens = 0;
    for (int64_t p = first; p <= last && tokens <= sample_length(); ++p) {
      const int64_t length = lengths[static_cast<size_t>(arrays[0].values[static_cast<size_t>(p)])];
      if (p == last && last_offset >= length) bad(names[1]);  // (so + 1 cannot overflow)
      const int64_t begin = p == first ? first_offset : 0;
      const int64_t end = p == last ? last_offset + kExtraToken : length;
      if (begin > end) bad(names[1]);
      tokens += end - begin;
    }
    if (tokens != sample_length()) bad(names[1]);
  }

  indices_.num_epochs = epochs;
  indices_.document_index.assign(arrays[0].values.begin(), arrays[0].values.end());
  indices_.sample_index = std::move(arrays[1].values);
  indices_.shuffle_index = std::move(arrays[2].values);
  return true;
}

void GPTDataset::read_sample(int64_t index, int64_t* out) const {
  MOE_CHECK(index >= 0 && index < size(), "GPTDataset ", corpus_->description(), ": sample ", index,
            " outside [0, ", size(), ")");
  const std::span<const int32_t> lengths = corpus_->sequence_lengths();
  const auto& rows = indices_.sample_index;
  const auto j = static_cast<size_t>(indices_.shuffle_index[static_cast<size_t>(index)]);
  const int64_t first = rows[2 * j], first_offset = rows[2 * j + 1];
  const int64_t last = rows[2 * j + 2], last_offset = rows[2 * j + 3];
  int64_t written = 0;
  for (int64_t p = first; p <= last; ++p) {
    const int64_t sequence = indices_.document_index[static_cast<size_t>(p)];
    const int64_t begin = p == first ? first_offset : 0;
    // Up to and including the shared token at (last, last_offset).
    const int64_t end = p == last ? last_offset + kExtraToken : lengths[size_t(sequence)];
    MOE_CHECK(written + (end - begin) <= sample_length() && end >= begin, "GPTDataset: sample ",
              index, " overruns ", sample_length(), " tokens");
    if (end > begin) corpus_->read(sequence, begin, end - begin, out + written);
    written += end - begin;
  }
  MOE_CHECK(written == sample_length(), "GPTDataset: sample ", index, " holds ", written,
            " tokens instead of ", sample_length());
}

std::vector<int64_t> GPTDataset::sample(int64_t index) const {
  std::vector<int64_t> out(static_cast<size_t>(sample_length()));
  read_sample(index, out.data());
  return out;
}

}  // namespace moe::data
