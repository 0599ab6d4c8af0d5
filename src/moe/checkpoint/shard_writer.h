// A streaming version of io::write_safetensors_sharded: tensors are handed over one at a time
// and written as soon as a shard is full, so converting a 671B checkpoint holds one shard (plus
// the tensor being added) in memory, not the model.
//
// Same split as Hugging Face (huggingface_hub's split_state_dict_into_shards_factory): in the
// order given, a tensor larger than max_shard_bytes gets a shard of its own (placed before the
// shard being filled); otherwise a new shard starts when adding the tensor would pass the limit.
// Shards are written atomically under temporary names (".<prefix>.part-<i>.safetensors") and
// renamed by finish() to <prefix>-0000i-of-0000n.safetensors (or <prefix>.safetensors when
// there is one), with the index <prefix>.safetensors.index.json as transformers writes it.
// The folder should be fresh (converters write into a temporary folder renamed at the end).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "moe/io/safetensors.h"

namespace moe::checkpoint {

inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000;  // transformers' "5GB"

// "5GB" -> 5e9, "500MB", "2GiB" -> 2^31, "123" (bytes), as transformers' max_shard_size
// (KB/MB/GB decimal, KiB/MiB/GiB binary). Other text is an error naming it.
uint64_t parse_byte_size(const std::string& text);

class ShardWriter {
 public:
  ShardWriter(std::string folder, uint64_t max_shard_bytes, io::SafetensorsMetadata metadata = {},
              std::string prefix = "model");
  // Queues (and maybe writes) one tensor (any device). Duplicate names are errors.
  void add(const std::string& name, const Tensor& tensor);
  // Writes the last shard, names the shards, writes the index; returns what io's writer does.
  io::ShardedWriteResult finish();

  uint64_t total_bytes() const { return total_size_; }
  int64_t tensor_count() const { return static_cast<int64_t>(names_.size()); }

 private:
  void write_shard(const io::NamedTensors& tensors);

  std::string folder_;
  uint64_t max_shard_bytes_;
  io::SafetensorsMetadata metadata_;
  std::string prefix_;
  io::NamedTensors pending_;
  uint64_t pending_bytes_ = 0;
  // Written shards in final order: temporary file name and the tensor names it holds.
  std::vector<std::pair<std::string, std::vector<std::string>>> shards_;
  std::set<std::string> names_;
  uint64_t total_size_ = 0;
  bool finished_ = false;
};

}  // namespace moe::checkpoint
