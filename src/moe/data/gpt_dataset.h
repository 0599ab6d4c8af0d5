// Megatron's GPTDataset (megatron/core/datasets/gpt_dataset.py + helpers.cpp): one split's
// documents of a tokenized corpus, concatenated epoch after epoch in a shuffled order and cut
// into samples of seq_length + 1 tokens that cross document boundaries, then read in a
// shuffled order. The three indices are built exactly as Megatron builds them, with numpy's
// RandomState(seed) (numpy_random.h), so dataset[i] is Megatron's dataset[i] token for token.
//
// Like Megatron's GPT dataset, "documents" here are the corpus's sequences
// (numel_low_level_dataset = len(sequence_lengths)); with `moe preprocess` (one sequence per
// document) they are the documents.
//
// With D = the split's document ids [begin, end), T = sum of their lengths (tokens per epoch),
// S = seq_length, n = the requested num_samples (nullopt: one epoch):
//   num_epochs E   = 1, or the least E with E * T >= n * S + 1.
//   separate final epoch (E > 1): n_rest = n - ((E-1) T - 1) / S samples come from the last
//                    epoch; separate iff n_rest < int(0.8 * ((T - 1) / S)).
//   document_index = D repeated E times, shuffled as one array (int32); with a separate final
//                    epoch: shuffle(D x (E-1)) then shuffle(D), concatenated.
//   sample_index   = (N + 1) rows (position in document_index, token offset), N = (E T - 1) / S:
//                    sample j covers the flattened tokens from row j up to and including the
//                    token at row j + 1, i.e. S + 1 tokens; consecutive samples share one token.
//   shuffle_index  = shuffle(arange(N)) (uint32), or with a separate final epoch
//                    shuffle(arange(N_first)) ++ shuffle(arange(N_first, N)),
//                    N_first = ((E-1) T - 1) / S.
//   The random state is drawn in this order: document shuffles, then shuffle-index shuffles.
//   dataset[i] = the tokens of sample shuffle_index[i].
//
// The indices are cached as Megatron caches them: in `cache_dir`, files
//   <hash>-GPTDataset-<split>-{document_index,sample_index,shuffle_index}.npy (numpy's format and
//   Megatron's dtypes), -checksums.json (CRC-32C of each .npy) and -description.txt (the unique
//   description below, written last, so a complete set means a complete build),
// where <hash> is a 64-bit FNV-1a of the description. Each file is written atomically. A later
// construction with the same description reads them instead of rebuilding; a set whose
// description text differs from ours, whose checksum fails or whose arrays do not have the
// shapes and ranges this dataset needs is refused with an error naming the file. The
// description holds: class, dataset_path, num_samples, index_split, random_seed,
// sequence_length, split, documents [begin, end), num_sequences, num_tokens and the CRC-32C of
// the corpus's sequence lengths (so a changed corpus does not reuse a stale cache).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "moe/data/dataset_split.h"
#include "moe/data/sample_dataset.h"
#include "moe/data/token_sequences.h"

namespace moe::data {

struct GPTDatasetConfig {
  int64_t sequence_length = 0;  // --seq-length (S)
  int64_t random_seed = 1234;   // --seed; numpy accepts 0 .. 2^32 - 1
  std::string split;            // the --split text, recorded in the description
  std::string cache_dir;        // where the index files live; empty: build in memory only
};

struct GPTIndices {
  std::vector<int32_t> document_index;  // sequence ids, num_epochs * documents
  std::vector<int64_t> sample_index;    // (num_samples + 1) x 2, row-major
  std::vector<int64_t> shuffle_index;   // num_samples
  int64_t num_epochs = 0;
  bool separate_final_epoch = false;
  int64_t num_samples() const { return static_cast<int64_t>(shuffle_index.size()); }
};

// Megatron's _get_num_epochs: 1 when num_samples is nullopt, else the least E >= 1 with
// E * tokens_per_epoch >= num_samples * S + 1.
int64_t gpt_num_epochs(int64_t tokens_per_epoch, std::optional<int64_t> num_samples,
                       int64_t sequence_length);

// helpers.cpp's build_sample_idx (drop the last partial sample, one extra token per sample):
// 2 * (N + 1) values, N = (num_epochs * tokens_per_epoch - 1) / S.
std::vector<int64_t> build_sample_index(std::span<const int32_t> sequence_lengths,
                                        std::span<const int32_t> document_index,
                                        int64_t sequence_length, int64_t num_epochs,
                                        int64_t tokens_per_epoch);

// All three indices for documents [begin, end) of a corpus with `sequence_lengths`.
GPTIndices build_gpt_indices(std::span<const int32_t> sequence_lengths, int64_t begin, int64_t end,
                             std::optional<int64_t> num_samples, int64_t sequence_length,
                             int64_t random_seed);

class GPTDataset : public SampleDataset {
 public:
  // `dataset_path` names the corpus in the description (the --data-path prefix);
  // `documents` = [begin, end) from split_document_range; `num_samples` as Megatron's (the
  // minimum number of samples to build; nullopt: one epoch).
  GPTDataset(std::shared_ptr<const TokenSequences> corpus, std::string dataset_path,
             std::pair<int64_t, int64_t> documents, std::optional<int64_t> num_samples, Split split,
             GPTDatasetConfig config);

  int64_t size() const override { return indices_.num_samples(); }
  int64_t sample_length() const override { return config_.sequence_length + 1; }
  void read_sample(int64_t index, int64_t* out) const override;
  std::vector<int64_t> sample(int64_t index) const;  // read_sample into a new vector
  const std::string& description() const override { return description_; }

  const GPTIndices& indices() const { return indices_; }
  std::optional<int64_t> requested_samples() const { return num_samples_; }
  Split split() const { return split_; }
  // Whether the indices were read from the cache rather than built.
  bool loaded_from_cache() const { return loaded_from_cache_; }
  // The cache file with `suffix` ("description.txt", "document_index.npy", ...); needs cache_dir.
  std::string cache_path(const std::string& suffix) const;

 private:
  bool load_cache(int64_t tokens_per_epoch);
  void save_cache() const;

  std::shared_ptr<const TokenSequences> corpus_;
  std::pair<int64_t, int64_t> documents_;
  std::optional<int64_t> num_samples_;
  Split split_;
  GPTDatasetConfig config_;
  std::string description_;
  std::string hash_;
  GPTIndices indices_;
  bool loaded_from_cache_ = false;
};

// 16 hex digits of the 64-bit FNV-1a hash of `text` (cache file names).
std::string description_hash(const std::string& text);

}  // namespace moe::data
