// NumPy .npy files: the float32 arrays `moe forward` writes (logits [B, S, V]) and a reader for
// tests and tools.
//
// The format (numpy.lib.format, version 1.0):
//   "\x93NUMPY" 0x01 0x00 [u16 little-endian HEADER_LEN] [HEADER_LEN bytes of header] [data]
//   header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded with spaces and
//   ending in '\n' so that 10 + HEADER_LEN is a multiple of 64 (numpy's alignment).
// Data: little-endian, C order (row-major), numel * itemsize bytes. A 0-d array has shape ().
#pragma once

#include <string>
#include <string_view>

#include "moe/core/tensor.h"

namespace moe::io {

// The 10-byte preamble and padded header text (numpy.save's, byte for byte) for a C-order array
// of `descr` ("<f4", "<i2", "<u4", ...) and `shape`; the first overload is '<f4'.
std::string npy_header(const Shape& shape);
std::string npy_header(const std::string& descr, const Shape& shape);

// The layout a .npy file's bytes declare (versions 1.0, 2.0, 3.0): the dtype text (unquoted,
// e.g. "<i8"), the shape and the offset of the data. A missing magic, an unknown version, a
// truncated or malformed header, Fortran order and a shape whose element count overflows int64
// are errors naming `path`. The data's length is the caller's to check (before allocating).
struct NpyLayout {
  std::string descr;
  Shape shape;
  int64_t numel = 0;  // the product of the shape (checked to fit int64)
  size_t data_offset = 0;
};
NpyLayout parse_npy_layout(std::string_view bytes, const std::string& path);

// Writes `tensor` (any floating dtype, any device; converted to f32) as a float32 .npy,
// atomically (AtomicFile).
void write_npy(const std::string& path, const Tensor& tensor);

// Reads a .npy of version 1.0, 2.0 or 3.0 holding '<f4', '<f8', '<i8', '<i4' or '|u1' in C
// order into a CPU tensor of that dtype (f32, f64, i64, i32, u8). Fortran order, big-endian
// data, other dtypes and truncated files are errors naming the path.
Tensor read_npy(const std::string& path);

}  // namespace moe::io
