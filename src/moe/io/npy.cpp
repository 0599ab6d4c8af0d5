// .npy writing and reading (npy.h).
#include "moe/io/npy.h"

#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "moe/core/error.h"
#include "moe/io/atomic_file.h"

namespace moe::io {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr size_t kAlign = 64;  // numpy.lib.format.ARRAY_ALIGN

std::string shape_tuple(const Shape& shape) {
  std::ostringstream out;
  out << '(';
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out << ", ";
    out << shape[i];
  }
  if (shape.size() == 1) out << ',';  // Python's one-element tuple
  out << ')';
  return out.str();
}

// The value text of `key` in the header dict, up to the next top-level ',' or '}' (the shape
// tuple's own commas are inside parentheses).
std::string dict_value(const std::string& header, const std::string& key, const std::string& path) {
  const std::string quoted[] = {"'" + key + "'", "\"" + key + "\""};
  size_t pos = std::string::npos;
  for (const std::string& q : quoted)
    if ((pos = header.find(q)) != std::string::npos) {
      pos += q.size();
      break;
    }
  MOE_CHECK(pos != std::string::npos, path, ": .npy header lacks '", key, "': ", header);
  pos = header.find(':', pos);
  MOE_CHECK(pos != std::string::npos, path, ": malformed .npy header: ", header);
  ++pos;
  int depth = 0;
  size_t end = pos;
  for (; end < header.size(); ++end) {
    const char ch = header[end];
    if (ch == '(') ++depth;
    if (ch == ')') --depth;
    if (depth == 0 && (ch == ',' || ch == '}')) break;
  }
  std::string value = header.substr(pos, end - pos);
  const size_t first = value.find_first_not_of(" \t");
  const size_t last = value.find_last_not_of(" \t");
  return first == std::string::npos ? std::string() : value.substr(first, last - first + 1);
}

Shape parse_shape(const std::string& text, const std::string& path) {
  MOE_CHECK(text.size() >= 2 && text.front() == '(' && text.back() == ')', path,
            ": .npy shape is not a tuple: ", text);
  Shape shape;
  std::stringstream items(text.substr(1, text.size() - 2));
  std::string item;
  while (std::getline(items, item, ',')) {
    const size_t first = item.find_first_not_of(" \t");
    if (first == std::string::npos) continue;  // the trailing comma of (5,)
    const std::string digits = item.substr(first, item.find_last_not_of(" \tL") - first + 1);
    MOE_CHECK(!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos, path,
              ": .npy shape entry \"", item, "\" is not a size");
    // 18 digits always fit int64; longer ones may not (std::stoll would throw out_of_range).
    MOE_CHECK(digits.find_first_not_of('0') == std::string::npos ||
                  digits.size() - digits.find_first_not_of('0') <= 18,
              path, ": .npy shape entry ", digits, " is too large");
    shape.push_back(std::stoll(digits));
  }
  return shape;
}

DType parse_descr(const std::string& d, const std::string& path) {
  if (d == "<f4") return DType::f32;
  if (d == "<f8") return DType::f64;
  if (d == "<i8") return DType::i64;
  if (d == "<i4") return DType::i32;
  if (d == "|u1" || d == "<u1") return DType::u8;
  MOE_FAIL(path, ": .npy dtype ", d,
           " is not supported (little-endian <f4, <f8, <i8, <i4 or |u1 only)");
}

}  // namespace

std::string npy_header(const Shape& shape) { return npy_header("<f4", shape); }

std::string npy_header(const std::string& descr, const Shape& shape) {
  // As numpy.lib.format._write_array_header: the dict with sorted keys, spare spaces after it
  // so that the first axis can grow in place (GROWTH_AXIS_MAX_DIGITS = 21), then
  // _wrap_header's padding of 1..64 spaces and '\n' up to a multiple of 64 bytes.
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " +
                     shape_tuple(shape) + ", }";
  if (!shape.empty()) {
    const size_t digits = std::to_string(shape[0]).size();
    if (digits < 21) dict.append(21 - digits, ' ');
  }
  const size_t preamble = kMagicLen + 2 + 2;
  const size_t padding = kAlign - (preamble + dict.size() + 1) % kAlign;
  dict.append(padding, ' ');
  dict += '\n';
  MOE_CHECK(dict.size() <= 0xffff, ".npy header of ", dict.size(),
            " bytes does not fit version 1.0 (shape ", shape_str(shape), ")");
  std::string out(kMagic, kMagicLen);
  out += static_cast<char>(1);
  out += static_cast<char>(0);
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>((dict.size() >> 8) & 0xff);
  return out + dict;
}

void write_npy(const std::string& path, const Tensor& tensor) {
  MOE_CHECK(tensor.defined(), "write_npy ", path, ": undefined tensor");
  MOE_CHECK(is_floating(tensor.dtype()), "write_npy ", path, ": tensor of dtype ", tensor.dtype(),
            " (a float32 .npy holds floating-point values)");
  const Tensor host = tensor.to(Device::cpu()).to(DType::f32);
  AtomicFile file(path);
  file.write(npy_header(host.shape()));
  file.write(host.raw(), host.nbytes());  // the host is little-endian (x86-64, aarch64)
  file.commit();
}

NpyLayout parse_npy_layout(std::string_view bytes, const std::string& path) {
  MOE_CHECK(bytes.size() >= kMagicLen + 4 && std::memcmp(bytes.data(), kMagic, kMagicLen) == 0,
            path, ": not a .npy file (no \\x93NUMPY magic)");
  const auto major = static_cast<unsigned char>(bytes[kMagicLen]);
  size_t header_len = 0, preamble = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) |
                 (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    preamble = 10;
  } else if (major == 2 || major == 3) {
    MOE_CHECK(bytes.size() >= 12, path, ": truncated .npy preamble");
    for (int i = 0; i < 4; ++i)
      header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    preamble = 12;
  } else {
    MOE_FAIL(path, ": .npy version ", static_cast<int>(major), " is not supported (1, 2 or 3)");
  }
  MOE_CHECK(bytes.size() >= preamble + header_len, path, ": truncated .npy header");
  const std::string header(bytes.substr(preamble, header_len));
  NpyLayout layout;
  layout.descr = dict_value(header, "descr", path);
  if (layout.descr.size() >= 2 && (layout.descr.front() == '\'' || layout.descr.front() == '"'))
    layout.descr = layout.descr.substr(1, layout.descr.size() - 2);
  const std::string fortran = dict_value(header, "fortran_order", path);
  MOE_CHECK(fortran == "False", path, ": Fortran-order .npy arrays are not supported");
  layout.shape = parse_shape(dict_value(header, "shape", path), path);
  layout.numel = 1;
  for (const int64_t d : layout.shape)
    MOE_CHECK(!__builtin_mul_overflow(layout.numel, d, &layout.numel), path, ": .npy shape ",
              shape_str(layout.shape), " has more elements than 64 bits count");
  layout.data_offset = preamble + header_len;
  return layout;
}

Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "cannot open .npy file ", path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const NpyLayout layout = parse_npy_layout(bytes, path);
  const DType dtype = parse_descr(layout.descr, path);
  // The size check comes before the allocation: the shape is the file's claim.
  const uint64_t have = bytes.size() - layout.data_offset;
  const uint64_t item = dtype_size(dtype);
  MOE_CHECK(static_cast<uint64_t>(layout.numel) <= have / item &&
                have == static_cast<uint64_t>(layout.numel) * item,
            path, ": .npy data holds ", have, " bytes, but shape ", shape_str(layout.shape), " of ",
            dtype, " needs ", layout.numel, " x ", item,
            layout.numel <= (int64_t{1} << 56) ? " = " + std::to_string(layout.numel * item) : "");
  Tensor out = Tensor::empty(layout.shape, dtype);
  if (out.nbytes() > 0) std::memcpy(out.raw(), bytes.data() + layout.data_offset, out.nbytes());
  return out;
}

}  // namespace moe::io
