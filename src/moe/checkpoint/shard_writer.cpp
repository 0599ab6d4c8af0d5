// Streaming sharded safetensors writer (shard_writer.h).
#include "moe/checkpoint/shard_writer.h"

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/io/atomic_file.h"

namespace moe::checkpoint {

namespace fs = std::filesystem;

uint64_t parse_byte_size(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  MOE_CHECK(digits > 0 && digits <= 15, "size \"", text,
            "\" is not a byte count such as 5GB, 500MB, 2GiB or 1000000");
  const uint64_t number = std::stoull(text.substr(0, digits));
  std::string unit = text.substr(digits);
  for (char& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  static const std::pair<const char*, uint64_t> units[] = {
      {"", 1},          {"B", 1},           {"KB", 1000},       {"MB", 1000'000},
      {"GB", 1000'000'000}, {"KIB", 1ull << 10}, {"MIB", 1ull << 20}, {"GIB", 1ull << 30}};
  for (const auto& [name, factor] : units)
    if (unit == name) {
      MOE_CHECK(number > 0, "size \"", text, "\" must be positive");
      return number * factor;
    }
  MOE_FAIL("size \"", text, "\" has an unknown unit; use B, KB, MB, GB, KiB, MiB or GiB");
}

ShardWriter::ShardWriter(std::string folder, uint64_t max_shard_bytes,
                         io::SafetensorsMetadata metadata, std::string prefix)
    : folder_(std::move(folder)),
      max_shard_bytes_(max_shard_bytes),
      metadata_(std::move(metadata)),
      prefix_(std::move(prefix)) {
  MOE_CHECK(max_shard_bytes_ > 0, "ShardWriter: max_shard_bytes must be positive");
  MOE_CHECK(fs::is_directory(folder_), "ShardWriter: folder ", folder_, " does not exist");
}

void ShardWriter::write_shard(const io::NamedTensors& tensors) {
  char name[64];
  std::snprintf(name, sizeof(name), ".part-%05zu.safetensors", shards_.size() + 1);
  std::string temp = ".";  // (not an operator+ chain: GCC 12 gives a false -Wrestrict on it)
  temp += prefix_;
  temp += name;
  io::write_safetensors((fs::path(folder_) / temp).string(), tensors, metadata_);
  std::vector<std::string> held;
  for (const auto& [n, t] : tensors) held.push_back(n);
  shards_.emplace_back(temp, std::move(held));
}

void ShardWriter::add(const std::string& name, const Tensor& tensor) {
  MOE_CHECK(!finished_, "ShardWriter: add(", name, ") after finish()");
  MOE_CHECK(tensor.defined(), "ShardWriter: tensor ", name, " is undefined");
  MOE_CHECK(names_.insert(name).second, "ShardWriter: tensor ", name, " was added twice");
  const uint64_t bytes = tensor.nbytes();
  total_size_ += bytes;
  if (bytes > max_shard_bytes_) {
    write_shard({{name, tensor}});  // its own shard, before the one being filled
    return;
  }
  if (pending_bytes_ + bytes > max_shard_bytes_) {
    write_shard(pending_);
    pending_.clear();
    pending_bytes_ = 0;
  }
  pending_.emplace_back(name, tensor);
  pending_bytes_ += bytes;
}

io::ShardedWriteResult ShardWriter::finish() {
  MOE_CHECK(!finished_, "ShardWriter: finish() called twice");
  finished_ = true;
  if (!pending_.empty() || shards_.empty()) write_shard(pending_);
  pending_.clear();
  io::ShardedWriteResult result;
  result.total_size = total_size_;
  const size_t n = shards_.size();
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < n; ++i) {
    std::string final_name = prefix_ + ".safetensors";
    if (n > 1) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "-%05zu-of-%05zu.safetensors", i + 1, n);
      final_name = prefix_ + buf;
    }
    fs::rename(fs::path(folder_) / shards_[i].first, fs::path(folder_) / final_name);
    for (const std::string& tensor : shards_[i].second) weight_map[tensor] = final_name;
    result.files.push_back(final_name);
  }
  if (n > 1) {
    // transformers: json.dumps(index, indent=2, sort_keys=True) + "\n"
    const nlohmann::json index = {{"metadata", {{"total_size", total_size_}}},
                                  {"weight_map", weight_map}};
    result.index_file = prefix_ + ".safetensors.index.json";
    io::write_file_atomically((fs::path(folder_) / result.index_file).string(),
                              index.dump(2) + "\n");
  }
  return result;
}

}  // namespace moe::checkpoint
