#include "moe/train/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "moe/core/error.h"
#include "moe/core/rng.h"
#include "moe/data/byte_tokenizer.h"
#include "moe/nn/kv_cache.h"

namespace moe::train {
namespace {

// The ids a draw can pick, most likely first, with their (renormalised) probabilities.
struct Candidates {
  std::vector<int64_t> ids;
  std::vector<double> probs;
};

int64_t checked_limit(const std::vector<double>& logits, int64_t sampled_vocab) {
  const int64_t n = static_cast<int64_t>(logits.size());
  MOE_CHECK(sampled_vocab >= 0 && sampled_vocab <= n, "sampling: sampled vocabulary ",
            sampled_vocab, " must be in 0..", n, " (the number of logits; 0 means all)");
  return sampled_vocab == 0 ? n : sampled_vocab;
}

bool is_greedy(const SamplingOptions& options) {
  return options.temperature == 0.0 || options.top_k == 1;
}

// The argmax over ids [0, limit) (lowest id among equal maxima), after the logit checks.
int64_t argmax(const std::vector<double>& logits, int64_t limit) {
  int64_t best = -1;
  for (int64_t i = 0; i < limit; ++i) {
    const double x = logits[static_cast<size_t>(i)];
    MOE_CHECK(!std::isnan(x), "sampling: the logit of id ", i, " is NaN");
    MOE_CHECK(x != INFINITY, "sampling: the logit of id ", i, " is +inf");
    if (x == -INFINITY) continue;
    if (best < 0 || x > logits[static_cast<size_t>(best)]) best = i;
  }
  MOE_CHECK(best >= 0, "sampling: no finite logit among ids 0..", limit - 1);
  return best;
}

Candidates candidates(const std::vector<double>& logits, const SamplingOptions& options,
                      int64_t sampled_vocab) {
  check_sampling_options(options);
  const int64_t limit = checked_limit(logits, sampled_vocab);
  Candidates c;
  if (is_greedy(options)) {
    c.ids = {argmax(logits, limit)};
    c.probs = {1.0};
    return c;
  }
  (void)argmax(logits, limit);  // the NaN / +inf / all -inf checks
  for (int64_t i = 0; i < limit; ++i)
    if (logits[static_cast<size_t>(i)] != -INFINITY) c.ids.push_back(i);
  // Largest logit first; stable, so equal logits keep the lower id first (deterministic).
  std::stable_sort(c.ids.begin(), c.ids.end(), [&](int64_t a, int64_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
  });
  if (options.top_k > 0 && options.top_k < static_cast<int64_t>(c.ids.size()))
    c.ids.resize(static_cast<size_t>(options.top_k));

  // softmax(logits / T) over the kept ids, shifted by the maximum so exp cannot overflow.
  const double top = logits[static_cast<size_t>(c.ids[0])] / options.temperature;
  double total = 0.0;
  for (const int64_t id : c.ids) {
    c.probs.push_back(std::exp(logits[static_cast<size_t>(id)] / options.temperature - top));
    total += c.probs.back();
  }
  for (double& p : c.probs) p /= total;

  if (options.top_p < 1.0) {
    // The nucleus: the shortest prefix reaching top_p (the first id always stays).
    double cumulative = 0.0;
    size_t keep = 0;
    while (keep < c.probs.size()) {
      cumulative += c.probs[keep++];
      if (cumulative >= options.top_p) break;
    }
    c.ids.resize(keep);
    c.probs.resize(keep);
    for (double& p : c.probs) p /= cumulative;
  }
  return c;
}

}  // namespace

void check_sampling_options(const SamplingOptions& options) {
  MOE_CHECK(std::isfinite(options.temperature) && options.temperature >= 0.0,
            "sampling: --temperature must be >= 0 (0 is greedy), got ", options.temperature);
  MOE_CHECK(options.top_k >= 0, "sampling: --top-k must be >= 0 (0 keeps every id), got ",
            options.top_k);
  MOE_CHECK(options.top_p > 0.0 && options.top_p <= 1.0,
            "sampling: --top-p must be in (0, 1] (1 keeps every id), got ", options.top_p);
}

std::vector<double> sampling_distribution(const std::vector<double>& logits,
                                          const SamplingOptions& options, int64_t sampled_vocab) {
  const Candidates c = candidates(logits, options, sampled_vocab);
  std::vector<double> dist(logits.size(), 0.0);
  for (size_t j = 0; j < c.ids.size(); ++j) dist[static_cast<size_t>(c.ids[j])] = c.probs[j];
  return dist;
}

double sampling_uniform(uint64_t seed, uint64_t draw) {
  // 27 + 26 bits of one Philox block: (k + 0.5) / 2^53 lies strictly inside (0, 1).
  const Philox4 r = philox4x32_10(seed, draw);
  const uint64_t k = (static_cast<uint64_t>(r.v[0] >> 5) << 26) | (r.v[1] >> 6);
  return (static_cast<double>(k) + 0.5) * 0x1p-53;
}

int64_t sample_token(const std::vector<double>& logits, const SamplingOptions& options,
                     uint64_t seed, uint64_t draw, int64_t sampled_vocab) {
  const Candidates c = candidates(logits, options, sampled_vocab);
  if (c.ids.size() == 1) return c.ids[0];
  // Inverse CDF in the sorted order: the first id whose cumulative probability exceeds u.
  const double u = sampling_uniform(seed, draw);
  double cumulative = 0.0;
  for (size_t j = 0; j < c.ids.size(); ++j) {
    cumulative += c.probs[j];
    if (u < cumulative) return c.ids[j];
  }
  return c.ids.back();  // u above a cumulative sum rounded just below 1
}

namespace {

// The checked window and sampled vocabulary of `options` for `model`.
struct Limits {
  int64_t window = 0, sampled_vocab = 0;
};

Limits check_generation(const nn::GPTModel& model, const std::vector<int64_t>& prompt,
                        const GenerateOptions& options) {
  const nn::ModelConfig& config = model.config();
  const int64_t vocab = config.vocab_size;
  check_sampling_options(options.sampling);
  MOE_CHECK(options.max_new_tokens >= 0, "generate: --max-new-tokens must be >= 0, got ",
            options.max_new_tokens);
  MOE_CHECK(options.sampled_vocab_size >= 0 && options.sampled_vocab_size <= vocab,
            "generate: the sampled vocabulary (", options.sampled_vocab_size, ") must be in 1..",
            vocab, " (the model's vocab_size), or 0 for all of it");
  Limits limits;
  limits.sampled_vocab = options.sampled_vocab_size == 0 ? vocab : options.sampled_vocab_size;
  const int64_t max_positions = config.max_position_embeddings;
  MOE_CHECK(options.max_sequence_length >= 0 && options.max_sequence_length <= max_positions,
            "generate: --seq-length ", options.max_sequence_length, " must be in 1..",
            max_positions, " (the model's max_position_embeddings), or 0 for that");
  limits.window = options.max_sequence_length == 0 ? max_positions : options.max_sequence_length;
  std::vector<int64_t> ends = options.stop_ids;
  if (options.end_of_document_id) ends.push_back(*options.end_of_document_id);
  for (const int64_t id : ends)
    MOE_CHECK(id >= 0 && id < vocab, "generate: the end-of-document id ", id,
              " is outside the model's vocabulary 0..", vocab - 1);
  MOE_CHECK(!prompt.empty(), "generate: the prompt holds no tokens (give at least one id)");
  for (size_t i = 0; i < prompt.size(); ++i)
    MOE_CHECK(prompt[i] >= 0 && prompt[i] < limits.sampled_vocab, "generate: prompt id ",
              prompt[i], " at position ", i, " is outside the vocabulary 0..",
              limits.sampled_vocab - 1);
  return limits;
}

bool is_end(const GenerateOptions& options, int64_t id) {
  if (options.end_of_document_id && id == *options.end_of_document_id) return true;
  return std::find(options.stop_ids.begin(), options.stop_ids.end(), id) != options.stop_ids.end();
}

// The last `window` ids of `sequence`.
std::vector<int64_t> window_of(const std::vector<int64_t>& sequence, int64_t window) {
  const size_t start = sequence.size() > static_cast<size_t>(window)
                           ? sequence.size() - static_cast<size_t>(window)
                           : 0;
  return {sequence.begin() + static_cast<std::ptrdiff_t>(start), sequence.end()};
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// One sequence without the cache: each step a full forward of the window.
std::vector<int64_t> generate_uncached(nn::GPTModel& model, const std::vector<int64_t>& prompt,
                                       const GenerateOptions& options, const Limits& limits,
                                       GenerateStats& stats) {
  std::vector<int64_t> sequence = prompt;
  std::vector<int64_t> generated;
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int64_t> ids = window_of(sequence, limits.window);
    const int64_t S = static_cast<int64_t>(ids.size());
    const Tensor input = Tensor::from_vector(ids, {S, 1}, model.device());
    // [S, 1, V] -> the last position's row, on the host in double.
    const std::vector<double> last = model.logits(input).rows(S - 1, 1).to_double_vector();
    const int64_t next = sample_token(last, options.sampling, options.seed,
                                      static_cast<uint64_t>(step), limits.sampled_vocab);
    (step == 0 ? stats.prefill_seconds : stats.decode_seconds) += seconds_since(start);
    if (step > 0) ++stats.decode_tokens;
    generated.push_back(next);
    sequence.push_back(next);
    if (is_end(options, next)) break;
  }
  return generated;
}

}  // namespace

std::vector<std::vector<int64_t>> generate_batch(nn::GPTModel& model,
                                                 const std::vector<std::vector<int64_t>>& prompts,
                                                 const GenerateOptions& options,
                                                 GenerateStats* stats_out) {
  Limits limits;
  for (const std::vector<int64_t>& prompt : prompts)
    limits = check_generation(model, prompt, options);
  GenerateStats stats;
  const size_t n = prompts.size();
  std::vector<std::vector<int64_t>> generated(n);
  for (const auto& prompt : prompts)
    stats.prompt_tokens += static_cast<int64_t>(std::min<size_t>(prompt.size(),
                                                                 static_cast<size_t>(limits.window)));
  if (!options.kv_cache) {
    for (size_t b = 0; b < n; ++b)
      generated[b] = generate_uncached(model, prompts[b], options, limits, stats);
    if (stats_out) *stats_out = stats;
    return generated;
  }
  if (options.max_new_tokens == 0) {
    if (stats_out) *stats_out = stats;
    return generated;
  }
  std::vector<nn::SequenceKvCache> caches(n);
  std::vector<std::vector<int64_t>> sequences = prompts;
  std::vector<bool> done(n, false);
  const auto take = [&](size_t b, const std::vector<double>& logits, int64_t step) {
    const int64_t next = sample_token(logits, options.sampling, options.seed,
                                      static_cast<uint64_t>(step), limits.sampled_vocab);
    generated[b].push_back(next);
    sequences[b].push_back(next);
    if (is_end(options, next) || step + 1 >= options.max_new_tokens) done[b] = true;
  };
  // A sequence's window run from an empty cache (the prompt; or, past the window, every step:
  // positions restart at 0 in each window, so nothing cached can be reused).
  const auto prefill = [&](size_t b) {
    caches[b] = nn::SequenceKvCache{};
    const std::vector<int64_t> ids = window_of(sequences[b], limits.window);
    const Tensor input =
        Tensor::from_vector(ids, {static_cast<int64_t>(ids.size()), 1}, model.device());
    return nn::decode_step(model, input, {&caches[b]}).to_double_vector();
  };

  auto start = std::chrono::steady_clock::now();
  for (size_t b = 0; b < n; ++b) take(b, prefill(b), 0);
  stats.prefill_seconds = seconds_since(start);
  start = std::chrono::steady_clock::now();
  const int64_t V = model.config().vocab_size;
  for (int64_t step = 1; step < options.max_new_tokens; ++step) {
    std::vector<size_t> batch;
    std::vector<int64_t> ids;
    for (size_t b = 0; b < n; ++b) {
      if (done[b]) continue;
      ++stats.decode_tokens;
      if (caches[b].length + 1 > limits.window) {
        take(b, prefill(b), step);
        continue;
      }
      batch.push_back(b);
      ids.push_back(sequences[b].back());
    }
    if (batch.empty()) {
      if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
      continue;
    }
    const int64_t B = static_cast<int64_t>(batch.size());
    std::vector<nn::SequenceKvCache*> step_caches;
    for (const size_t b : batch) step_caches.push_back(&caches[b]);
    const std::vector<double> logits =
        nn::decode_step(model, Tensor::from_vector(ids, {1, B}, model.device()), step_caches)
            .to_double_vector();
    for (int64_t i = 0; i < B; ++i)
      take(batch[static_cast<size_t>(i)],
           std::vector<double>(logits.begin() + i * V, logits.begin() + (i + 1) * V), step);
  }
  stats.decode_seconds = seconds_since(start);
  if (stats_out) *stats_out = stats;
  return generated;
}

std::vector<int64_t> generate(nn::GPTModel& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& options) {
  return generate_batch(model, {prompt}, options).front();
}

std::string generate_byte_text(nn::GPTModel& model, std::string_view prompt,
                               GenerateOptions options) {
  using data::ByteTokenizer;
  const int64_t vocab = model.config().vocab_size;
  MOE_CHECK(ByteTokenizer::fits_model_vocab(vocab), "model ", model.config().name,
            " has a vocabulary of ", vocab, " ids, not a byte-level one (",
            ByteTokenizer::kVocabSize, " ids padded to at most ",
            ByteTokenizer::kMaxPaddedVocabSize,
            "): generating text from it needs its tokenizer (generate_text, --tokenizer-model)");
  return generate_text(model, data::ByteLevelTokenizer(), prompt, options);
}

std::string generate_text(nn::GPTModel& model, const data::Tokenizer& tokenizer,
                          std::string_view prompt, GenerateOptions options) {
  return generate_texts(model, tokenizer, {std::string(prompt)}, std::move(options)).front();
}

std::vector<std::string> generate_texts(nn::GPTModel& model, const data::Tokenizer& tokenizer,
                                        const std::vector<std::string>& prompts,
                                        GenerateOptions options, GenerateStats* stats) {
  const int64_t vocab = tokenizer.vocab_size();
  MOE_CHECK(model.config().vocab_size >= vocab, "model ", model.config().name, " has ",
            model.config().vocab_size, " vocabulary ids, fewer than the tokenizer's ", vocab, " (",
            tokenizer.description(), "): not the tokenizer it was trained with");
  options.sampled_vocab_size = vocab;
  if (!options.end_of_document_id) options.end_of_document_id = tokenizer.end_of_document();
  std::vector<std::vector<int64_t>> ids;
  for (const std::string& prompt : prompts) {
    ids.push_back(tokenizer.encode_document(prompt));
    if (prompt.empty() && ids.back().empty() && tokenizer.end_of_document())
      ids.back().push_back(*tokenizer.end_of_document());
    MOE_CHECK(!ids.back().empty(), "generate: ", tokenizer.description(),
              " gives no ids for an empty prompt and has no end-of-document id: give a prompt");
  }
  std::vector<std::string> texts;
  for (std::vector<int64_t>& generated : generate_batch(model, ids, options, stats)) {
    if (!generated.empty() && is_end(options, generated.back())) generated.pop_back();
    texts.push_back(tokenizer.decode(generated));
  }
  return texts;
}

}  // namespace moe::train
