// Tensor sources for the converters (tensor_source.h).
#include "moe/checkpoint/tensor_source.h"

#include "moe/core/error.h"

namespace moe::checkpoint {

MapTensorSource::MapTensorSource(const std::map<std::string, Tensor>& tensors,
                                 std::string description)
    : tensors_(tensors), description_(std::move(description)) {
  for (const auto& [name, tensor] : tensors_) {
    MOE_CHECK(tensor.defined(), description_, ": tensor ", name, " is undefined");
    names_.push_back(name);
  }
}

bool MapTensorSource::contains(const std::string& name) const { return tensors_.count(name) > 0; }

const Tensor& MapTensorSource::get(const std::string& name) const {
  auto it = tensors_.find(name);
  MOE_CHECK(it != tensors_.end(), description_, " has no tensor ", name);
  return it->second;
}

SourceTensorInfo MapTensorSource::info(const std::string& name) const {
  const Tensor& t = get(name);
  return {t.dtype(), t.shape()};
}

Tensor MapTensorSource::load(const std::string& name) const {
  const Tensor& t = get(name);
  return t.is_cuda() ? t.to(Device::cpu()) : t;
}

CheckpointTensorSource::CheckpointTensorSource(const std::string& path)
    : path_(path), collection_(io::SafetensorsCollection::open(path)) {}

SourceTensorInfo CheckpointTensorSource::info(const std::string& name) const {
  MOE_CHECK(collection_.contains(name), description(), " has no tensor ", name);
  const io::SafetensorsTensorInfo& i = collection_.info(name);
  MOE_CHECK(i.dtype.has_value(), "tensor ", name, " in ", where(name), " is of dtype ",
            io::safetensors_dtype_name(i.file_dtype), ", which moecore cannot hold");
  return {*i.dtype, i.shape};
}

Tensor CheckpointTensorSource::load(const std::string& name) const {
  (void)info(name);  // the checks above, with their messages
  return collection_.load(name);
}

std::string CheckpointTensorSource::where(const std::string& name) const {
  if (!collection_.contains(name)) return description();
  return "file " + collection_.file_of(name).path();
}

}  // namespace moe::checkpoint
