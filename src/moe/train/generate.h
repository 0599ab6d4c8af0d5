// Text generation from a GPTModel, one token at a time (`moe generate`, and the sample the
// default run prints). Each step samples the next id from the logits of the last position:
//   greedy       temperature == 0 (or top_k == 1): argmax (the lowest id among equal maxima)
//   temperature  p_i = softmax(logits / T)_i
//   top-k        only the k largest logits stay (the rest get probability 0), k = 0: all
//   top-p        nucleus (Holtzman et al., 2019): of the ids left, sorted by probability,
//                the smallest prefix whose probability sums to >= top_p stays (at least the
//                most likely id); top_p = 1: all
// applied in that order (as Hugging Face's generate does), then renormalised, and one id drawn
// by the inverse CDF over the kept ids in their sorted order with a uniform u in (0, 1) from
// the Philox generator (core/rng.h) at (seed, step): the same seed gives the same text on any
// device (up to the logits' own rounding).
// Ids at or above sampled_vocab_size (the vocabulary padding) are never chosen.
//
// With the KV cache (GenerateOptions::kv_cache, the default; nn/kv_cache.h) the prompt runs
// once and each step runs the model on one new token per sequence, the sequences of a batch
// together. Without it every step recomputes the whole window with GPTModel::logits (the
// reference the cache is tested against). The window is the last `max_sequence_length` ids
// (default: the model's max_position_embeddings): rotary positions restart at 0 in each window,
// so once a sequence is longer than the window each of its steps recomputes the window (with or
// without the cache, the same computation).
// Several prompts: each sequence samples as it would alone (draw t of the seed at its step t)
// and stops at its own end id; ids are never padded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/data/tokenizer.h"
#include "moe/nn/gpt_model.h"

namespace moe::train {

struct SamplingOptions {
  double temperature = 1.0;  // >= 0; 0 is greedy
  int64_t top_k = 0;         // >= 0; 0 keeps all ids
  double top_p = 1.0;        // in (0, 1]; 1 keeps all ids
};

struct GenerateOptions {
  int64_t max_new_tokens = 200;  // >= 0
  SamplingOptions sampling;
  uint64_t seed = 1234;
  // The longest window given to the model: 0 is the model's max_position_embeddings; else
  // 1..max_position_embeddings (Megatron's --seq-length of the run).
  int64_t max_sequence_length = 0;
  // Generation stops after this id is produced (it is the last id returned); nullopt: never.
  std::optional<int64_t> end_of_document_id;
  // More ids that end a sequence the same way (generation_config.json's eos_token_id list).
  std::vector<int64_t> stop_ids = {};
  // Decode with a KV cache (see above); false recomputes the window at every step.
  bool kv_cache = true;
  // Ids >= this are never sampled: the tokenizer's vocabulary inside the model's padded one.
  // 0 is the model's vocab_size; else 1..vocab_size.
  int64_t sampled_vocab_size = 0;
};

// Throws moe::Error naming the option when it is out of range.
void check_sampling_options(const SamplingOptions& options);

// The distribution the sampler draws from, over ids 0..logits.size()-1 (ids >= sampled_vocab,
// when > 0, get 0): temperature, top-k, top-p as above; greedy gives a one-hot. Logits may be
// -inf (never chosen); NaN, +inf, or no finite logit among the sampled ids are errors.
std::vector<double> sampling_distribution(const std::vector<double>& logits,
                                          const SamplingOptions& options,
                                          int64_t sampled_vocab = 0);

// One id drawn from sampling_distribution(logits, options, sampled_vocab) with the uniform
// number `draw` of the Philox stream `seed`: a pure function of its arguments.
int64_t sample_token(const std::vector<double>& logits, const SamplingOptions& options,
                     uint64_t seed, uint64_t draw, int64_t sampled_vocab = 0);

// The uniform in (0, 1) used for draw `draw` of `seed`: 53 random bits from one Philox block.
double sampling_uniform(uint64_t seed, uint64_t draw);

// What a generation took: the prompts' tokens and their forward (the first new token of each
// sequence), and the later tokens and their steps. Seconds on the host clock, device work
// included (every step reads its logits back).
struct GenerateStats {
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  int64_t decode_tokens = 0;  // new tokens after each sequence's first
  double decode_seconds = 0;
  double decode_tokens_per_second() const {
    return decode_seconds > 0 ? static_cast<double>(decode_tokens) / decode_seconds : 0.0;
  }
};

// generate() for several prompts at once: result b continues prompts[b]. Equal to calling
// generate() on each prompt alone (up to the rounding of batched GEMMs). `stats` may be null.
std::vector<std::vector<int64_t>> generate_batch(nn::GPTModel& model,
                                                 const std::vector<std::vector<int64_t>>& prompts,
                                                 const GenerateOptions& options,
                                                 GenerateStats* stats = nullptr);

// Continues `prompt` (ids in 0..sampled vocabulary - 1, at least one) by up to
// options.max_new_tokens ids and returns only the new ids (the end-of-document id included
// when generation stopped at it). Step t (0-based) uses draw t of options.seed.
std::vector<int64_t> generate(nn::GPTModel& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& options);

// generate() for a byte-level model (data/byte_tokenizer.h): the prompt text's bytes (an empty
// prompt starts a new document: the end-of-document id alone), sampling only ids 0..256, and
// stopping at the end-of-document id unless options.end_of_document_id says otherwise. Returns
// the new text (the end-of-document id dropped): generate_text with the byte tokenizer, after
// checking the vocabulary. A model whose vocab_size cannot be a padded
// byte vocabulary (ByteTokenizer::fits_model_vocab) is an error saying a tokenizer is needed.
std::string generate_byte_text(nn::GPTModel& model, std::string_view prompt,
                               GenerateOptions options);

// generate() through any tokenizer (data/tokenizer.h): the prompt's ids as the tokenizer stores a
// document (encode_document: Llama-3 puts <|begin_of_text|> first), or, for an empty prompt,
// the end-of-document id alone (a new document); sampling only the tokenizer's ids (the model's
// padding ids never), stopping at its end-of-document id. Returns the new text. The model's
// vocabulary must hold the tokenizer's ids; an empty prompt with a tokenizer that has no
// end-of-document id and adds nothing is an error asking for a prompt.
std::string generate_text(nn::GPTModel& model, const data::Tokenizer& tokenizer,
                          std::string_view prompt, GenerateOptions options);
// generate_text for several prompts at once (generate_batch): the new text of each.
std::vector<std::string> generate_texts(nn::GPTModel& model, const data::Tokenizer& tokenizer,
                                        const std::vector<std::string>& prompts,
                                        GenerateOptions options, GenerateStats* stats = nullptr);

}  // namespace moe::train
