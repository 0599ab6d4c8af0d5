// Tensor sources for the converters (tensor_source.h).
#include "moe/checkpoint/tensor_source.h"

#include <cstring>

#include "moe/core/error.h"

namespace moe::checkpoint {

namespace {

// Checks rows [begin, end) of a tensor of `shape` and returns its row shape ([end - begin, ...]).
Shape rows_shape(const Shape& shape, int64_t begin, int64_t end, const std::string& name,
                 const std::string& where) {
  MOE_CHECK(!shape.empty() && 0 <= begin && begin <= end && end <= shape[0], "rows [", begin, ", ",
            end, ") of tensor ", name, " ", shape_str(shape), " in ", where, " are out of range");
  Shape out = shape;
  out[0] = end - begin;
  return out;
}

}  // namespace

Tensor TensorSource::load_rows(const std::string& name, int64_t begin, int64_t end) const {
  const Tensor t = load(name);
  (void)rows_shape(t.shape(), begin, end, name, where(name));
  return t.rows(begin, end - begin);
}

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

Tensor CheckpointTensorSource::load_rows(const std::string& name, int64_t begin,
                                         int64_t end) const {
  const SourceTensorInfo i = info(name);  // the checks of info(), with their messages
  const Shape shape = rows_shape(i.shape, begin, end, name, where(name));
  Tensor t = Tensor::empty(shape, i.dtype);
  // Row-major: rows [begin, end) are one run of bytes of the mapped file.
  const io::SafetensorsView view = collection_.view(name);
  const size_t row_bytes =
      i.shape[0] > 0 ? view.bytes().size() / static_cast<size_t>(i.shape[0]) : 0;
  if (t.nbytes() > 0)
    std::memcpy(t.raw(), view.bytes().data() + static_cast<size_t>(begin) * row_bytes, t.nbytes());
  return t;
}

std::string CheckpointTensorSource::where(const std::string& name) const {
  if (!collection_.contains(name)) return description();
  return "file " + collection_.file_of(name).path();
}

}  // namespace moe::checkpoint
