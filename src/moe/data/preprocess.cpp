#include "moe/data/preprocess.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "moe/core/error.h"
#include "moe/data/indexed_dataset_writer.h"

namespace moe::data {

std::string preprocess_output_prefix(const std::string& output_prefix, const std::string& key) {
  return output_prefix + "_" + key + "_document";
}

namespace {

// Lines are handed to the workers in batches: enough text per batch that the queue's locking
// costs nothing next to tokenizing, small enough that `workers` batches in flight stay small.
constexpr size_t kBatchLines = 256;
constexpr size_t kBatchBytes = size_t{1} << 20;

enum class Format { jsonl, text };

struct Batch {
  int64_t index = 0;
  const std::string* file = nullptr;
  int64_t first_line = 0;  // 1-based line number of lines[0]
  std::vector<std::string> lines;
  std::vector<int64_t> line_numbers;  // blank lines are not in `lines`
};

// One key's ids for a batch of documents, ready for the writer.
struct EncodedKey {
  std::vector<int64_t> tokens;  // all sequences back to back
  std::vector<int32_t> sequence_lengths;
  std::vector<int32_t> sequences_per_document;
};

struct EncodedBatch {
  std::vector<EncodedKey> keys;  // in json_keys order
  int64_t documents = 0;
  int64_t bytes = 0;
  std::exception_ptr error;
};

Format format_of(const std::string& choice, const std::string& path) {
  if (choice == "jsonl") return Format::jsonl;
  if (choice == "text") return Format::text;
  MOE_CHECK(choice == "auto", "--input-format '", choice, "': expected auto, jsonl or text");
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".jsonl" || ext == ".json" || ext == ".ndjson" ? Format::jsonl : Format::text;
}

// One document (its sentences) into `out`, as preprocess_data.py's Encoder.encode does.
void encode_document(const Tokenizer& tokenizer, const std::vector<std::string_view>& sentences,
                     std::optional<int64_t> eod, EncodedKey& out) {
  const size_t first_sequence = out.sequence_lengths.size();
  for (const std::string_view sentence : sentences) {
    const std::vector<int64_t> ids = tokenizer.encode_document(sentence);
    if (ids.empty()) continue;  // Megatron drops sentences without ids
    out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
    out.sequence_lengths.push_back(static_cast<int32_t>(ids.size()));
  }
  const size_t sequences = out.sequence_lengths.size() - first_sequence;
  if (eod && sequences > 0) {
    out.tokens.push_back(*eod);
    ++out.sequence_lengths.back();
  }
  out.sequences_per_document.push_back(static_cast<int32_t>(sequences));
}

EncodedBatch encode_batch(const Batch& batch, Format format,
                          const std::vector<std::string>& json_keys, const Tokenizer& tokenizer,
                          std::optional<int64_t> eod) {
  EncodedBatch out;
  out.keys.resize(json_keys.size());
  std::vector<std::string_view> sentences;
  for (size_t i = 0; i < batch.lines.size(); ++i) {
    const std::string& line = batch.lines[i];
    out.bytes += static_cast<int64_t>(line.size()) + 1;
    ++out.documents;
    if (format == Format::text) {
      sentences.assign(1, line);
      encode_document(tokenizer, sentences, eod, out.keys[0]);
      continue;
    }
    const auto where = [&] { return *batch.file + ":" + std::to_string(batch.line_numbers[i]); };
    nlohmann::json object;
    try {
      object = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      MOE_FAIL(where(), ": not valid JSON: ", e.what());
    }
    MOE_CHECK(object.is_object(), where(), ": expected a JSON object, got ", object.type_name());
    for (size_t k = 0; k < json_keys.size(); ++k) {
      const auto it = object.find(json_keys[k]);
      MOE_CHECK(it != object.end(), where(), ": no key '", json_keys[k], "' (--json-keys)");
      sentences.clear();
      if (it->is_string()) {
        sentences.push_back(it->get_ref<const std::string&>());
      } else {
        MOE_CHECK(it->is_array(), where(), ": '", json_keys[k],
                  "' must be a string or a list of strings, not ", it->type_name());
        for (const nlohmann::json& sentence : *it) {
          MOE_CHECK(sentence.is_string(), where(), ": '", json_keys[k],
                    "' must be a list of strings; it holds a ", sentence.type_name());
          sentences.push_back(sentence.get_ref<const std::string&>());
        }
      }
      encode_document(tokenizer, sentences, eod, out.keys[k]);
    }
  }
  return out;
}

// Reads a file in batches of non-blank lines, numbering them for messages.
class BatchReader {
 public:
  BatchReader(const std::string& path, Format format) : path_(path), format_(format) {
    input_.open(path, std::ios::binary);
    MOE_CHECK(input_.is_open(), "cannot open --input ", path, ": ", std::strerror(errno));
  }

  // False at the end of the file.
  bool next(Batch& batch) {
    batch.file = &path_;
    batch.lines.clear();
    batch.line_numbers.clear();
    size_t bytes = 0;
    std::string line;
    while (batch.lines.size() < kBatchLines && bytes < kBatchBytes && std::getline(input_, line)) {
      ++line_number_;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (is_blank(line)) {
        skipped_bytes_ += static_cast<int64_t>(line.size()) + 1;
        continue;
      }
      bytes += line.size();
      batch.lines.push_back(std::move(line));
      batch.line_numbers.push_back(line_number_);
    }
    MOE_CHECK(!input_.bad(), "error reading --input ", path_);
    return !batch.lines.empty();
  }
  int64_t skipped_bytes() const { return skipped_bytes_; }

 private:
  bool is_blank(const std::string& line) const {
    if (format_ == Format::text) return line.empty();
    return line.find_first_not_of(" \t\r\n") == std::string::npos;
  }

  std::string path_;
  Format format_;
  std::ifstream input_;
  int64_t line_number_ = 0;
  int64_t skipped_bytes_ = 0;
};

// Workers take batches from a queue and leave results keyed by batch index; the writer
// collects them in index order. At most `max_in_flight` batches are queued or done but not yet
// written, which bounds memory whatever the input size.
class OrderedEncoder {
 public:
  OrderedEncoder(const PreprocessOptions& options, Format format, const Tokenizer& tokenizer,
                 std::optional<int64_t> eod)
      : max_in_flight_(static_cast<int64_t>(options.workers) * 2) {
    const std::vector<std::string>& json_keys = options.json_keys;
    const auto body = [this, format, &json_keys, &tokenizer, eod] {
      work(format, json_keys, tokenizer, eod);
    };
    threads_.reserve(static_cast<size_t>(options.workers));
    // A thread that cannot start throws (std::system_error) from inside this constructor, so
    // the destructor would not run: the started threads are stopped and joined here, or their
    // std::thread objects would end the program (std::terminate) instead of an error.
    try {
      for (int w = 0; w < options.workers; ++w)
        threads_.push_back(options.start_worker ? options.start_worker(body) : std::thread(body));
    } catch (const std::exception& e) {
      const size_t started = threads_.size();
      stop();
      MOE_FAIL("preprocess: --workers ", options.workers, ": could not start tokenizing thread ",
               started + 1, " (", e.what(),
               "); the system's thread or memory limit was reached: give fewer --workers");
    }
  }
  ~OrderedEncoder() { stop(); }
  OrderedEncoder(const OrderedEncoder&) = delete;
  OrderedEncoder& operator=(const OrderedEncoder&) = delete;

  bool full() const { return submitted_ - collected_ >= max_in_flight_; }
  bool pending() const { return collected_ < submitted_; }

  void submit(Batch batch) {
    batch.index = submitted_++;
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(batch));
    }
    work_ready_.notify_one();
  }

  // The next batch in input order (waits for it); rethrows a worker's error for that batch.
  EncodedBatch collect() {
    std::unique_lock lock(mutex_);
    result_ready_.wait(lock, [&] { return done_.contains(collected_); });
    EncodedBatch result = std::move(done_.at(collected_));
    done_.erase(collected_++);
    lock.unlock();
    if (result.error) std::rethrow_exception(result.error);
    return result;
  }

 private:
  // Closes the queue and joins every started worker.
  void stop() noexcept {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
      queue_.clear();  // after an error nobody will collect the rest
    }
    work_ready_.notify_all();
    for (std::thread& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }

  void work(Format format, const std::vector<std::string>& json_keys, const Tokenizer& tokenizer,
            std::optional<int64_t> eod) {
    for (;;) {
      Batch batch;
      {
        std::unique_lock lock(mutex_);
        work_ready_.wait(lock, [&] { return closing_ || !queue_.empty(); });
        if (queue_.empty()) return;
        batch = std::move(queue_.front());
        queue_.pop_front();
      }
      EncodedBatch result;
      try {
        result = encode_batch(batch, format, json_keys, tokenizer, eod);
      } catch (...) {
        result = EncodedBatch{};
        result.error = std::current_exception();
      }
      {
        std::lock_guard lock(mutex_);
        done_.emplace(batch.index, std::move(result));
      }
      result_ready_.notify_all();
    }
  }

  const int64_t max_in_flight_;
  int64_t submitted_ = 0;  // writer thread only
  int64_t collected_ = 0;  // writer thread only (read by the wait predicate under the lock)
  std::mutex mutex_;
  std::condition_variable work_ready_, result_ready_;
  std::deque<Batch> queue_;
  std::map<int64_t, EncodedBatch> done_;
  bool closing_ = false;
  std::vector<std::thread> threads_;
};

// On a terminal one line rewritten in place ("\r", padded over the previous text) a few times
// a second; into a file or pipe a plain line every few seconds, so logs stay readable.
class Progress {
 public:
  explicit Progress(std::FILE* out)
      : out_(out),
        in_place_(out != nullptr && ::isatty(::fileno(out)) == 1),
        start_(std::chrono::steady_clock::now()) {}

  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

  void update(const PreprocessSummary& s, bool final) {
    if (out_ == nullptr) return;
    const double now = seconds();
    if (!final && now - last_ < (in_place_ ? 0.25 : 5.0)) return;
    last_ = now;
    const double mb = static_cast<double>(s.input_bytes) / (1024.0 * 1024.0);
    char line[256];
    const int n =
        std::snprintf(line, sizeof line,
                      "preprocess: %lld documents, %lld tokens, %.1f MB in %.1f s "
                      "(%.2f MB/s)",
                      static_cast<long long>(s.documents), static_cast<long long>(s.tokens), mb,
                      now, now > 0 ? mb / now : 0.0);
    if (in_place_) {
      std::fprintf(out_, "\r%s%*s", line, std::max(0, width_ - n), "");
      width_ = std::max(width_, n);
      if (final) std::fputc('\n', out_);
    } else {
      std::fprintf(out_, "%s\n", line);
    }
    std::fflush(out_);
  }

 private:
  std::FILE* out_;
  bool in_place_;
  std::chrono::steady_clock::time_point start_;
  double last_ = -1;
  int width_ = 0;  // longest line so far, to blank out what a shorter one leaves
};

}  // namespace

PreprocessSummary preprocess(const PreprocessOptions& options, const Tokenizer& tokenizer,
                             std::FILE* progress_stream) {
  MOE_CHECK(!options.inputs.empty(), "preprocess: no --input files");
  MOE_CHECK(!options.output_prefix.empty(), "preprocess: --output-prefix is required");
  MOE_CHECK(options.workers >= 1, "preprocess: --workers must be at least 1, got ",
            options.workers);
  MOE_CHECK(!options.json_keys.empty(), "preprocess: --json-keys is empty");
  const std::set<std::string> distinct(options.json_keys.begin(), options.json_keys.end());
  MOE_CHECK(distinct.size() == options.json_keys.size(),
            "preprocess: --json-keys names a key twice");
  std::vector<Format> formats;
  for (const std::string& input : options.inputs) {
    formats.push_back(format_of(options.input_format, input));
    MOE_CHECK(
        formats.back() == Format::jsonl || options.json_keys == std::vector<std::string>{"text"},
        "preprocess: ", input,
        " is read as plain text (one document per line); "
        "--json-keys applies to JSONL input only");
  }
  std::optional<int64_t> eod;
  if (options.append_eod) {
    eod = tokenizer.end_of_document();
    MOE_CHECK(eod.has_value(), "preprocess: --append-eod, but the tokenizer ",
              tokenizer.description(), " has no end-of-document id");
  }

  PreprocessSummary summary;
  summary.dtype = optimal_indexed_dtype(tokenizer.vocab_size());
  const std::filesystem::path folder = std::filesystem::path(options.output_prefix).parent_path();
  if (!folder.empty()) std::filesystem::create_directories(folder);
  std::vector<std::unique_ptr<IndexedDatasetWriter>> writers;
  for (const std::string& key : options.json_keys) {
    summary.output_prefixes.push_back(preprocess_output_prefix(options.output_prefix, key));
    writers.push_back(
        std::make_unique<IndexedDatasetWriter>(summary.output_prefixes.back(), summary.dtype));
  }

  Progress progress(progress_stream);
  const auto write = [&](const EncodedBatch& batch) {
    for (size_t k = 0; k < batch.keys.size(); ++k) {
      const EncodedKey& key = batch.keys[k];
      IndexedDatasetWriter& writer = *writers[k];
      size_t sequence = 0;
      int64_t offset = 0;
      for (const int32_t sequences : key.sequences_per_document) {
        for (int32_t s = 0; s < sequences; ++s, ++sequence) {
          const int64_t length = key.sequence_lengths[sequence];
          writer.add_sequence(std::span(key.tokens).subspan(offset, length));
          offset += length;
        }
        writer.end_document();
      }
      summary.tokens += static_cast<int64_t>(key.tokens.size());
    }
    summary.documents += batch.documents;
    summary.input_bytes += batch.bytes;
    progress.update(summary, false);
  };

  // Files one after the other, each through its own encoder (the format may differ).
  for (size_t f = 0; f < options.inputs.size(); ++f) {
    OrderedEncoder encoder(options, formats[f], tokenizer, eod);
    BatchReader reader(options.inputs[f], formats[f]);
    Batch batch;
    while (reader.next(batch)) {
      while (encoder.full()) write(encoder.collect());
      encoder.submit(std::move(batch));
      batch = Batch{};
    }
    while (encoder.pending()) write(encoder.collect());
    summary.input_bytes += reader.skipped_bytes();
  }
  for (auto& writer : writers) writer->finalize();
  summary.seconds = progress.seconds();
  progress.update(summary, true);
  return summary;
}

}  // namespace moe::data
