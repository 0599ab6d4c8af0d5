#include "moe/core/tensor.h"

#include <cstring>
#include <sstream>

#include "moe/core/allocator.h"
#include "moe/core/stream.h"
#include "moe/core/tensor_kernels.h"

#if MOE_WITH_CUDA
#include "moe/core/cuda_utils.h"
#endif

namespace moe {

std::string shape_str(const Shape& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

static int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    MOE_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
    n *= d;
  }
  return n;
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  data_ = allocate(bytes, device);
}

Storage::~Storage() {
  deallocate(data_, bytes_, device_);
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if MOE_WITH_CUDA
  // Queue on the stream of the CUDA side, then wait when the host reads or writes.
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  auto stream = reinterpret_cast<cudaStream_t>(current_stream(device));
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    MOE_CUDA_CHECK(
        cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, bytes, stream));
  } else {
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  }
  if (dst_device.is_cpu() || src_device.is_cpu()) MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
#else
  MOE_FAIL("copy involving a CUDA tensor, but this build has no CUDA");
#endif
}

void copy_bytes_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                   size_t height, Device device) {
  if (width == 0 || height == 0) return;
  MOE_CHECK(width <= dst_pitch && width <= src_pitch, "copy_bytes_2d: rows of ", width,
            " bytes with pitches ", dst_pitch, " and ", src_pitch);
  if (device.is_cpu()) {
    for (size_t i = 0; i < height; ++i)
      std::memcpy(static_cast<char*>(dst) + i * dst_pitch,
                  static_cast<const char*>(src) + i * src_pitch, width);
    return;
  }
#if MOE_WITH_CUDA
  auto stream = reinterpret_cast<cudaStream_t>(current_stream(device.index));
  MOE_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, height,
                                   cudaMemcpyDeviceToDevice, stream));
#else
  MOE_FAIL("copy of CUDA memory, but this build has no CUDA");
#endif
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(
      static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  if (d < 0) d += n;
  MOE_CHECK(d >= 0 && d < n, "dimension ", d, " out of range for a tensor of shape ",
            shape_str(shape_));
  return shape_[static_cast<size_t>(d)];
}

int64_t Tensor::numel() const {
  return shape_numel(shape_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape resolved = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      MOE_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= resolved[i];
    }
  }
  if (infer >= 0) {
    MOE_CHECK(known > 0 && numel() % known == 0, "reshape: cannot infer -1 in ", shape_str(shape),
              " from ", numel(), " elements");
    resolved[static_cast<size_t>(infer)] = numel() / known;
  }
  MOE_CHECK(shape_numel(resolved) == numel(), "reshape: ", shape_str(shape_), " has ", numel(),
            " elements, ", shape_str(shape), " needs ", shape_numel(resolved));
  Tensor t = *this;
  t.shape_ = resolved;
  return t;
}

Tensor Tensor::rows(int64_t start, int64_t count) const {
  MOE_CHECK(dim() >= 1, "rows() of a 0-d tensor");
  MOE_CHECK(start >= 0 && count >= 0 && start + count <= shape_[0], "rows(", start, ", ", count,
            ") out of range for shape ", shape_str(shape_));
  Tensor t = *this;
  const int64_t row_elems = shape_[0] == 0 ? 0 : numel() / shape_[0];
  t.offset_ += static_cast<size_t>(start * row_elems) * dtype_size(dtype_);
  t.shape_[0] = count;
  return t;
}

Tensor Tensor::flatten_rows() const {
  MOE_CHECK(dim() >= 1, "flatten_rows() of a 0-d tensor");
  return reshape({-1, shape_.back()});
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  copy_bytes(t.raw(), device, raw(), device_, nbytes());
  return t;
}

Tensor Tensor::to(DType dtype) const {
  Tensor out = empty(shape_, dtype, device_);
  if (dtype == dtype_) {
    copy_bytes(out.raw(), device_, raw(), device_, nbytes());
    return out;
  }
  if (device_.is_cuda()) {
    MOE_CUDA_ONLY(detail::cast_cuda(*this, out); return out;)
  }
  dispatch<DType::f64, DType::f32, DType::bf16, DType::f16, DType::fp8_e4m3, DType::fp8_e5m2,
           DType::i64, DType::i32, DType::u8>(dtype_, "Tensor::to(dtype)", [&]<class S>() {
    dispatch<DType::f64, DType::f32, DType::bf16, DType::f16, DType::fp8_e4m3, DType::fp8_e5m2,
             DType::i64, DType::i32, DType::u8>(dtype, "Tensor::to(dtype)", [&]<class D>() {
      const S* src = data<S>();
      D* dst = out.data<D>();
      const int64_t n = numel();
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_integral_v<D> || std::is_same_v<D, double>)
          dst[i] = static_cast<D>(static_cast<double>(src[i]));
        else
          dst[i] = D(static_cast<float>(src[i]));
      }
    });
  });
  return out;
}

std::vector<double> Tensor::to_double_vector() const {
  Tensor host = device_.is_cpu() ? *this : to(Device::cpu());
  Tensor as_f64 = host.to(DType::f64);
  return as_f64.to_vector<double>();
}

double Tensor::item() const {
  MOE_CHECK(numel() == 1, "item() on a tensor of shape ", shape_str(shape_));
  return to_double_vector()[0];
}

Tensor& Tensor::copy_(const Tensor& src) {
  MOE_CHECK(src.dtype_ == dtype_, "copy_: dtype ", src.dtype_, " into ", dtype_);
  MOE_CHECK(src.numel() == numel(), "copy_: shape ", shape_str(src.shape_), " into ",
            shape_str(shape_));
  copy_bytes(raw(), device_, src.raw(), src.device_, nbytes());
  return *this;
}

Tensor& Tensor::fill_(double value) {
  if (device_.is_cuda()) {
    MOE_CUDA_ONLY(detail::fill_cuda(*this, value); return *this;)
  }
  dispatch<DType::f64, DType::f32, DType::bf16, DType::f16, DType::fp8_e4m3, DType::fp8_e5m2,
           DType::i64, DType::i32, DType::u8>(dtype_, "fill_", [&]<class T>() {
    T v;
    if constexpr (std::is_integral_v<T> || std::is_same_v<T, double>)
      v = static_cast<T>(value);
    else
      v = T(static_cast<float>(value));
    T* p = data<T>();
    for (int64_t i = 0, n = numel(); i < n; ++i) p[i] = v;
  });
  return *this;
}

Tensor& Tensor::zero_() {
  if (device_.is_cuda()) {
    MOE_CUDA_ONLY(MOE_CUDA_CHECK(cudaMemsetAsync(raw(), 0, nbytes(), cuda::stream_of(*this)));
                  return *this;)
  }
  std::memset(raw(), 0, nbytes());
  return *this;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return "Tensor" + shape_str(shape_) + " " + dtype_name(dtype_) + " " + device_.str();
}

std::ostream& operator<<(std::ostream& out, const Tensor& t) {
  return out << t.str();
}

void check_defined(const Tensor& t, const char* op, const char* name) {
  MOE_CHECK(t.defined(), op, ": ", name, " is undefined");
}

void check_dim(const Tensor& t, int64_t dim, const char* op, const char* name) {
  check_defined(t, op, name);
  MOE_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got shape ",
            shape_str(t.shape()));
}

void check_dtype(const Tensor& t, DType dtype, const char* op, const char* name) {
  check_defined(t, op, name);
  MOE_CHECK(t.dtype() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.dtype());
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  MOE_CHECK(a.device() == b.device(), op, ": tensors on different devices (", a.device(), " and ",
            b.device(), ")");
}

void check_shape(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  check_defined(t, op, name);
  MOE_CHECK(t.shape() == shape, op, ": ", name, " must have shape ", shape_str(shape), ", got ",
            shape_str(t.shape()));
}

}  // namespace moe
