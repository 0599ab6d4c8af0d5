// A sharded checkpoint's model tensors as a TensorSource (sharded_tensor_source.h).
#include "moe/checkpoint/sharded_tensor_source.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <set>

#include "moe/core/error.h"

namespace moe::checkpoint {

namespace fs = std::filesystem;

namespace {

// The optimizer state of a parameter "<param>" in a training checkpoint (checkpoint_slices.h).
constexpr std::array<const char*, 3> kOptimizerSuffixes{".exp_avg", ".exp_avg_sq", ".master"};

}  // namespace

ShardedTensorSource::ShardedTensorSource(const std::string& folder)
    : folder_(folder), reader_(folder) {
  const std::vector<std::string> all = reader_.tensor_names();
  const std::set<std::string> stored(all.begin(), all.end());
  for (const std::string& name : all) {
    bool state = false;
    for (const char* suffix : kOptimizerSuffixes) {
      const std::string s = suffix;
      if (name.ends_with(s) && stored.count(name.substr(0, name.size() - s.size()))) state = true;
    }
    if (!state) names_.push_back(name);  // sorted, as tensor_names()
  }
}

bool ShardedTensorSource::contains(const std::string& name) const {
  return std::binary_search(names_.begin(), names_.end(), name);
}

SourceTensorInfo ShardedTensorSource::info(const std::string& name) const {
  MOE_CHECK(contains(name), description(), " has no tensor ", name);
  return {reader_.dtype(name), reader_.global_shape(name)};
}

Tensor ShardedTensorSource::load(const std::string& name) const {
  (void)info(name);
  return reader_.read_full(name);
}

Tensor ShardedTensorSource::load_rows(const std::string& name, int64_t begin, int64_t end) const {
  const SourceTensorInfo i = info(name);
  MOE_CHECK(!i.shape.empty() && 0 <= begin && begin <= end && end <= i.shape[0], "rows [", begin,
            ", ", end, ") of tensor ", name, " ", shape_str(i.shape), " in ", description(),
            " are out of range");
  Shape rows = i.shape;
  rows[0] = end - begin;
  Tensor out = Tensor::empty(rows, i.dtype);
  std::vector<int64_t> offset(i.shape.size(), 0);
  offset[0] = begin;
  reader_.read(name, i.shape, offset, rows, 0, out.numel(), out);
  return out;
}

bool is_sharded_folder(const std::string& dir) {
  return fs::is_regular_file(fs::path(dir) / kShardedIndexFile);
}

std::unique_ptr<TensorSource> open_model_tensors(const std::string& dir, CheckpointFormat format) {
  if (format == CheckpointFormat::moecore && is_sharded_folder(dir))
    return std::make_unique<ShardedTensorSource>(dir);
  return std::make_unique<CheckpointTensorSource>(dir);
}

}  // namespace moe::checkpoint
