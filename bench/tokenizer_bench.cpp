#include "tokenizer_bench.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "moe/core/error.h"
#include "moe/data/builtin_corpus.h"
#include "moe/data/tokenizer.h"

namespace moe::bench {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "bench tokenizer: cannot read --input ", path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> read_documents(const std::string& path) {
  if (path.empty()) {
    std::vector<std::string> docs;
    for (const std::string& file : data::fortune_files()) {
      std::vector<std::string> entries = data::split_fortune_text(read_file(file));
      docs.insert(docs.end(), entries.begin(), entries.end());
    }
    MOE_CHECK(!docs.empty(), "bench tokenizer: no fortunes in ", data::kFortunesDir,
              " (apt-get install fortunes, or give --input)");
    return docs;
  }
  const std::string text = read_file(path);
  if (path.ends_with(".json")) {
    const nlohmann::json list = nlohmann::json::parse(text);
    MOE_CHECK(list.is_array(), "bench tokenizer: ", path, " must hold a JSON list of strings");
    return list.get<std::vector<std::string>>();
  }
  if (path.ends_with(".jsonl")) {
    std::vector<std::string> docs;
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line))
      if (!line.empty()) docs.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
    return docs;
  }
  return {text};
}

}  // namespace

CLI::App* add_tokenizer_bench_command(CLI::App& bench, TokenizerBenchOptions& options) {
  CLI::App* command =
      bench.add_subcommand("tokenizer", "single-thread encoding speed of a tokenizer (MB/s)");
  command->add_option("--tokenizer-type", options.tokenizer_type)->capture_default_str();
  command->add_option("--tokenizer-model", options.tokenizer_model, "tokenizer.json or its folder")
      ->capture_default_str();
  command->add_option("--input", options.input,
                      "documents: .json list of strings, .jsonl with \"text\", or one text file "
                      "(default: Debian's fortunes)");
  command->add_option("--iters", options.iters, "timed passes after the cold one")
      ->capture_default_str()
      ->check(CLI::Range(1, std::numeric_limits<int>::max()));
  return command;
}

int run_tokenizer_bench(const TokenizerBenchOptions& options) {
  const std::vector<std::string> docs = read_documents(options.input);
  size_t bytes = 0;
  for (const std::string& d : docs) bytes += d.size();
  const std::unique_ptr<data::Tokenizer> tok =
      data::make_tokenizer(options.tokenizer_type, options.tokenizer_model);
  std::printf("tokenizer %s, vocabulary %lld\ninput %s: %zu documents, %.2f MB\n",
              tok->description().c_str(), static_cast<long long>(tok->vocab_size()),
              options.input.empty() ? data::kFortunesDir : options.input.c_str(), docs.size(),
              static_cast<double>(bytes) / 1e6);

  using clock = std::chrono::steady_clock;
  size_t tokens = 0;
  size_t round_trips = 0;
  const auto pass = [&](bool check) {
    const auto start = clock::now();
    size_t count = 0;
    for (const std::string& d : docs) {
      const std::vector<int64_t> ids = tok->encode(d);
      count += ids.size();
      if (check && tok->decode(ids) == d) ++round_trips;
    }
    tokens = count;
    return std::chrono::duration<double>(clock::now() - start).count();
  };
  // The cold pass is timed alone; the decode check runs after it, untimed.
  const double cold = pass(false);
  pass(true);
  std::vector<double> times;
  for (int i = 0; i < options.iters; ++i) times.push_back(pass(false));
  std::sort(times.begin(), times.end());
  const double warm = times[times.size() / 2];
  const auto mb_s = [&](double s) { return static_cast<double>(bytes) / 1e6 / s; };
  const auto tok_s = [&](double s) { return static_cast<double>(tokens) / s; };
  std::printf(
      "%zu tokens (%.2f bytes/token); decode gives the input back for %zu of %zu documents\n",
      tokens, static_cast<double>(bytes) / static_cast<double>(std::max<size_t>(tokens, 1)),
      round_trips, docs.size());
  std::printf("%-22s %10s %12s %14s\n", "pass (1 thread)", "seconds", "MB/s", "tokens/s");
  std::printf("%-22s %10.3f %12.2f %14.0f\n", "first (cold cache)", cold, mb_s(cold), tok_s(cold));
  std::printf("%-22s %10.3f %12.2f %14.0f\n", "median (warm cache)", warm, mb_s(warm), tok_s(warm));
  return 0;
}

}  // namespace moe::bench
