// The library side of `moe preprocess`, Megatron's tools/preprocess_data.py without sentence
// splitting: text documents -> token ids -> one Megatron indexed dataset per JSON key
// (indexed_dataset.h), named as Megatron names them:
//   <output_prefix>_<key>_document.bin / .idx
//
// Input, files read in the order given:
//   jsonl  one JSON object per line; the text of each key in `json_keys` is a string (one
//          sequence) or a list of strings (pre-split sentences, one sequence each, as Megatron
//          accepts). Blank lines are skipped; a line that is not an object, or lacks a key, is
//          an error naming the file and line.
//   text   one document per line (the line without its "\n" or "\r\n"); empty lines are skipped.
//          The output is named with the key "text" (json_keys must be left at {"text"}).
//   auto   jsonl for names ending in .jsonl, .json or .ndjson, text otherwise.
//
// Every document is written as Megatron writes it: each non-empty sentence's ids are one
// sequence, with `append_eod` the tokenizer's end-of-document id is appended to the last one,
// and a document whose text gives no ids is kept as a document with no sequence (nothing is
// appended to it). The dtype follows Megatron's optimal_dtype of the tokenizer's vocabulary
// size (uint16 below 65500 ids, else int32). Given the same tokenizer, the files are the ones
// preprocess_data.py writes for the same JSONL.
//
// `workers` threads tokenize batches of lines in parallel; the writer takes the batches back
// in input order, so the output does not depend on the number of workers. A worker that cannot
// start (the system's thread or memory limit) is an error naming --workers, after the threads
// already started are stopped and joined.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "moe/data/indexed_dataset.h"
#include "moe/data/tokenizer.h"

namespace moe::data {

struct PreprocessOptions {
  std::vector<std::string> inputs;             // --input, one or more files
  std::string input_format = "auto";           // --input-format: auto | jsonl | text
  std::vector<std::string> json_keys{"text"};  // --json-keys
  std::string output_prefix;                   // --output-prefix (folders are created)
  bool append_eod = false;                     // --append-eod
  int workers = 1;                             // --workers, >= 1
  // How a worker thread is started; empty: std::thread(body). Tests give one that fails, as
  // std::thread's constructor does (std::system_error) under a thread or memory limit.
  std::function<std::thread(std::function<void()> body)> start_worker;
};

struct PreprocessSummary {
  int64_t documents = 0;    // input documents (JSONL objects or text lines)
  int64_t tokens = 0;       // ids written, summed over keys
  int64_t input_bytes = 0;  // bytes of the lines read
  double seconds = 0;
  IndexedDType dtype = IndexedDType::uint16;
  std::vector<std::string> output_prefixes;  // one per key, in json_keys order
};

// <output_prefix>_<key>_document
std::string preprocess_output_prefix(const std::string& output_prefix, const std::string& key);

// Runs the whole conversion. `progress`, if not null, receives the progress (documents,
// tokens, MB read, MB/s): on a terminal one line updated in place a few times a second,
// otherwise a line every 5 s; and a final line. Nothing is left behind on error: the outputs
// are written atomically (indexed_dataset_writer.h).
PreprocessSummary preprocess(const PreprocessOptions& options, const Tokenizer& tokenizer,
                             std::FILE* progress);

}  // namespace moe::data
