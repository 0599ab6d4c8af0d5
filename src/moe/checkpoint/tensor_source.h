// A read-only set of named tensors that the checkpoint converters read one tensor at a time:
// an in-memory map, or a safetensors checkpoint on disk (a file, a folder or an index; the
// files stay memory-mapped and only the tensor asked for is copied out), or a sharded training
// checkpoint (sharded_tensor_source.h).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "moe/core/tensor.h"
#include "moe/io/safetensors.h"

namespace moe::checkpoint {

struct SourceTensorInfo {
  DType dtype = DType::f32;
  Shape shape;
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const std::vector<std::string>& names() const = 0;  // sorted
  virtual bool contains(const std::string& name) const = 0;
  // Dtype and shape without loading; throws naming the tensor and its file when it is absent or
  // of a dtype moecore cannot hold.
  virtual SourceTensorInfo info(const std::string& name) const = 0;
  virtual Tensor load(const std::string& name) const = 0;  // a CPU copy in the stored dtype
  // Rows [begin, end) of dim 0 (0 <= begin <= end <= rows; a 0-d tensor has no rows), a CPU
  // tensor in the stored dtype: what an expert-parallel rank reads of a stacked expert tensor.
  // The default cuts load(); a checkpoint on disk copies only those rows out of its mapped file.
  virtual Tensor load_rows(const std::string& name, int64_t begin, int64_t end) const;
  // Where a tensor is, for messages ("file /a/model-00002-of-00003.safetensors").
  virtual std::string where(const std::string& name) const = 0;
  // The whole source, for messages ("checkpoint /a", "the tensor map").
  virtual std::string description() const = 0;
};

// Over a std::map (any devices; load() copies to the host). The map must outlive the source.
class MapTensorSource final : public TensorSource {
 public:
  explicit MapTensorSource(const std::map<std::string, Tensor>& tensors,
                           std::string description = "the tensor map");
  const std::vector<std::string>& names() const override { return names_; }
  bool contains(const std::string& name) const override;
  SourceTensorInfo info(const std::string& name) const override;
  Tensor load(const std::string& name) const override;
  std::string where(const std::string& name) const override { return description_; }
  std::string description() const override { return description_; }

 private:
  const Tensor& get(const std::string& name) const;
  const std::map<std::string, Tensor>& tensors_;
  std::vector<std::string> names_;
  std::string description_;
};

// Over io::SafetensorsCollection::open(path).
class CheckpointTensorSource final : public TensorSource {
 public:
  explicit CheckpointTensorSource(const std::string& path);
  const std::vector<std::string>& names() const override { return collection_.names(); }
  bool contains(const std::string& name) const override { return collection_.contains(name); }
  SourceTensorInfo info(const std::string& name) const override;
  Tensor load(const std::string& name) const override;
  Tensor load_rows(const std::string& name, int64_t begin, int64_t end) const override;
  std::string where(const std::string& name) const override;
  std::string description() const override { return "checkpoint " + path_; }
  const io::SafetensorsCollection& collection() const { return collection_; }

 private:
  std::string path_;
  io::SafetensorsCollection collection_;
};

}  // namespace moe::checkpoint
