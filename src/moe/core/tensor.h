// Tensor: a contiguous row-major array with a shape, a dtype and a device, sharing its
// storage through a reference count. Views (reshape, rows) share storage; everything else
// allocates. There is no autograd: modules compute their own backward (docs/design.md).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "moe/core/device.h"
#include "moe/core/dtype.h"
#include "moe/core/error.h"

namespace moe {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);
// `shape` with its first dimension set to n (the rows of a sequence-major tensor).
inline Shape with_dim0(Shape shape, int64_t n) {
  shape[0] = n;
  return shape;
}

class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() == false

  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype, Device device = Device::cpu());
  // Copies host values into a new tensor of dtype_of<T> on `device`.
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype, Device device = Device::cpu()) {
    return full({}, value, dtype, device);
  }

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_cuda() const { return device_.is_cuda(); }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  // size(-1) is the last dimension.
  int64_t size(int64_t d) const;
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  // Typed pointer; checks that T matches the dtype.
  template <class T>
  T* data() const {
    MOE_CHECK(defined(), "data() of an undefined tensor");
    MOE_CHECK(dtype_of<T> == dtype_, "data<", dtype_name(dtype_of<T>), ">() on a ", dtype_,
              " tensor");
    return static_cast<T*>(raw());
  }

  // Views sharing storage.
  Tensor reshape(const Shape& shape) const;         // one dim may be -1
  Tensor rows(int64_t start, int64_t count) const;  // [start, start+count) along dim 0
  Tensor flatten_rows() const;                      // [..., N] -> [prod(...), N]

  // Copies.
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;  // cast (round to nearest even)
  Tensor clone() const { return to(device_); }
  template <class T>
  std::vector<T> to_vector() const;              // copies to host; T must match dtype
  std::vector<double> to_double_vector() const;  // any dtype, converted
  double item() const;                           // single element, converted to double

  // In place.
  Tensor& copy_(const Tensor& src);  // same shape and dtype; any devices
  Tensor& fill_(double value);
  Tensor& zero_();

  std::string str() const;  // "Tensor[2, 3] bf16 cuda:0"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_;
};

std::ostream& operator<<(std::ostream& out, const Tensor& t);

// ---- checks used at op boundaries -------------------------------------------------------
// Each names the op and the tensor in its message.
void check_defined(const Tensor& t, const char* op, const char* name);
void check_dim(const Tensor& t, int64_t dim, const char* op, const char* name);
void check_dtype(const Tensor& t, DType dtype, const char* op, const char* name);
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
void check_shape(const Tensor& t, const Shape& shape, const char* op, const char* name);

// ---- template definitions ---------------------------------------------------------------

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
// `height` rows of `width` bytes from src (rows `src_pitch` bytes apart) to dst (rows
// `dst_pitch` apart), both on `device` (cudaMemcpy2DAsync on its current stream): a strided copy,
// as when blocks of a row-major tensor's last dims change places.
void copy_bytes_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                   size_t height, Device device);

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  Tensor t = empty(shape, dtype_of<T>, device);
  MOE_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "from_vector: ", values.size(),
            " values for shape ", shape_str(shape));
  copy_bytes(t.raw(), device, values.data(), Device::cpu(), t.nbytes());
  return t;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  MOE_CHECK(dtype_of<T> == dtype_, "to_vector<", dtype_name(dtype_of<T>), "> on a ", dtype_,
            " tensor");
  std::vector<T> out(static_cast<size_t>(numel()));
  copy_bytes(out.data(), Device::cpu(), raw(), device_, nbytes());
  return out;
}

}  // namespace moe
