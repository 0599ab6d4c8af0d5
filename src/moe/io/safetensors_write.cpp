// Writing safetensors files: the header exactly as the Rust library's `prepare` builds it
// (so files are byte-identical to Python's), the data streamed tensor by tensor through an
// AtomicFile, and Hugging Face style sharding with an index JSON.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "moe/core/error.h"
#include "moe/io/atomic_file.h"
#include "moe/io/safetensors.h"

namespace moe::io {
namespace {

namespace fs = std::filesystem;

// Checks the whole input before any byte is written, so a bad call leaves no file behind.
void check_tensors(const NamedTensors& tensors, const std::string& where) {
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    MOE_CHECK(name != "__metadata__", where,
              ": '__metadata__' is reserved and cannot name a tensor");
    MOE_CHECK(tensor.defined(), where, ": tensor '", name, "' is undefined");
    MOE_CHECK(seen.insert(name).second, where, ": tensor name '", name, "' is given twice");
  }
}

// The order of the data: descending SafetensorsDType (the Rust enum order, roughly
// descending alignment, so every tensor starts aligned for its type), then name bytewise.
std::vector<size_t> data_order(const NamedTensors& tensors) {
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto da = to_safetensors_dtype(tensors[a].second.dtype());
    const auto db = to_safetensors_dtype(tensors[b].second.dtype());
    if (da != db) return da > db;
    return tensors[a].first < tensors[b].first;
  });
  return order;
}

// 8-byte little-endian N, then N bytes of compact JSON padded with spaces to a multiple of 8:
//   {"__metadata__":{...},"<name>":{"dtype":"F32","shape":[..],"data_offsets":[b,e]},...}
// (serde_json's compact output: no spaces, keys in insertion order, the same string escapes
// as nlohmann's dump).
std::string build_header(const NamedTensors& tensors, const std::vector<size_t>& order,
                         const SafetensorsMetadata& metadata, const std::string& where) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;  // std::map: sorted keys
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& [name, tensor] = tensors[i];
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = safetensors_dtype_name(to_safetensors_dtype(tensor.dtype()));
    entry["shape"] = tensor.shape();
    entry["data_offsets"] = {offset, offset + tensor.nbytes()};
    offset += tensor.nbytes();
    header[name] = std::move(entry);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    MOE_FAIL(where, ": a tensor name or metadata string is not valid UTF-8: ", e.what());
  }
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i, n >>= 8) out[static_cast<size_t>(i)] = static_cast<char>(n & 0xff);
  return out + text;
}

// Small tensors are gathered into one buffer so that a file of many biases is not thousands
// of write calls; large ones go straight from their memory to the file.
class BufferedWriter {
 public:
  explicit BufferedWriter(AtomicFile& file) : file_(file) {}
  void write(const void* data, size_t bytes) {
    if (bytes >= kDirect) {
      flush();
      file_.write(data, bytes);
      return;
    }
    buffer_.append(static_cast<const char*>(data), bytes);
    if (buffer_.size() >= kDirect) flush();
  }
  void flush() {
    if (!buffer_.empty()) file_.write(buffer_);
    buffer_.clear();
  }

 private:
  static constexpr size_t kDirect = 4u << 20;
  AtomicFile& file_;
  std::string buffer_;
};

}  // namespace

std::string safetensors_header(const NamedTensors& tensors, const SafetensorsMetadata& metadata) {
  check_tensors(tensors, "safetensors_header");
  return build_header(tensors, data_order(tensors), metadata, "safetensors_header");
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const SafetensorsMetadata& metadata) {
  check_tensors(tensors, path);
  const std::vector<size_t> order = data_order(tensors);
  const std::string header = build_header(tensors, order, metadata, path);

  AtomicFile file(path);  // removes its temporary if anything below throws
  BufferedWriter out(file);
  out.write(header.data(), header.size());
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    if (t.device().is_cpu()) {
      out.write(t.raw(), t.nbytes());
    } else {
      const Tensor host = t.to(Device::cpu());  // one tensor at a time on the host
      out.write(host.raw(), host.nbytes());
    }
  }
  out.flush();
  file.commit();
}

ShardedWriteResult write_safetensors_sharded(const std::string& folder, const NamedTensors& tensors,
                                             uint64_t max_shard_bytes,
                                             const SafetensorsMetadata& metadata,
                                             const std::string& prefix) {
  const std::string where = folder + "/" + prefix;
  check_tensors(tensors, where);
  MOE_CHECK(max_shard_bytes > 0, where, ": max_shard_bytes must be positive");
  MOE_CHECK(!prefix.empty() && prefix.find('/') == std::string::npos, where,
            ": the prefix must be a plain file name, got '", prefix, "'");
  std::error_code ec;
  fs::create_directories(folder, ec);
  MOE_CHECK(!ec, folder, ": cannot create the folder: ", ec.message());

  // huggingface_hub's split: oversized tensors get a shard each, in the order met; the
  // others fill the current shard until the next one would tip it over the limit.
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_size = 0, total_size = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t size = tensors[i].second.nbytes();
    total_size += size;
    if (size > max_shard_bytes) {
      shards.push_back({i});
      continue;
    }
    if (current_size + size > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_size = 0;
    }
    current.push_back(i);
    current_size += size;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));

  ShardedWriteResult result;
  result.total_size = total_size;
  const size_t count = shards.size();
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < count; ++s) {
    std::string name = prefix + ".safetensors";
    if (count > 1) {
      char suffix[48];
      std::snprintf(suffix, sizeof(suffix), "-%05zu-of-%05zu", s + 1, count);
      name = prefix + suffix + ".safetensors";
    }
    NamedTensors shard;
    for (size_t i : shards[s]) {
      shard.push_back(tensors[i]);
      weight_map[tensors[i].first] = name;
    }
    write_safetensors((fs::path(folder) / name).string(), shard, metadata);
    result.files.push_back(name);
  }
  if (count > 1) {
    // transformers: json.dumps(index, indent=2, sort_keys=True) + "\n"
    nlohmann::json index = {{"metadata", {{"total_size", total_size}}},
                            {"weight_map", std::move(weight_map)}};
    result.index_file = prefix + ".safetensors.index.json";
    write_file_atomically((fs::path(folder) / result.index_file).string(), index.dump(2) + "\n");
  }

  // The new save is complete: remove what an earlier save with this prefix left that the new
  // one does not use, so that opening the folder cannot pick up the old checkpoint.
  const std::regex shard_name(
      std::regex_replace(prefix, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
      R"(-\d{5}-of-\d{5}\.safetensors)");
  const std::set<std::string> keep(result.files.begin(), result.files.end());
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    const bool stale = !keep.count(name) && name != result.index_file &&
                       (std::regex_match(name, shard_name) || name == prefix + ".safetensors" ||
                        name == prefix + ".safetensors.index.json");
    if (stale) fs::remove(entry.path(), ec);
  }
  return result;
}

}  // namespace moe::io
