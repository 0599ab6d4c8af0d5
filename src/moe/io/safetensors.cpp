// Reading one safetensors file: the dtype table, the memory mapping, and the header parser
// that checks every rule of the format (safetensors.h) before any tensor is handed out.
#include "moe/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "moe/core/error.h"
#include "moe/core/json_file.h"

namespace moe::io {

// ---- dtype table -------------------------------------------------------------------------

namespace {

struct DTypeRow {
  SafetensorsDType dtype;
  const char* name;
  size_t bits;
};

// The format's dtypes (safetensors/src/tensor.rs, `Dtype` and `bitsize`).
constexpr DTypeRow kDTypes[] = {
    {SafetensorsDType::BOOL, "BOOL", 8},
    {SafetensorsDType::F4, "F4", 4},
    {SafetensorsDType::F6_E2M3, "F6_E2M3", 6},
    {SafetensorsDType::F6_E3M2, "F6_E3M2", 6},
    {SafetensorsDType::U8, "U8", 8},
    {SafetensorsDType::I8, "I8", 8},
    {SafetensorsDType::F8_E5M2, "F8_E5M2", 8},
    {SafetensorsDType::F8_E4M3, "F8_E4M3", 8},
    {SafetensorsDType::F8_E8M0, "F8_E8M0", 8},
    {SafetensorsDType::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {SafetensorsDType::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {SafetensorsDType::I16, "I16", 16},
    {SafetensorsDType::U16, "U16", 16},
    {SafetensorsDType::F16, "F16", 16},
    {SafetensorsDType::BF16, "BF16", 16},
    {SafetensorsDType::I32, "I32", 32},
    {SafetensorsDType::U32, "U32", 32},
    {SafetensorsDType::F32, "F32", 32},
    {SafetensorsDType::C64, "C64", 64},
    {SafetensorsDType::F64, "F64", 64},
    {SafetensorsDType::I64, "I64", 64},
    {SafetensorsDType::U64, "U64", 64},
};

const DTypeRow& row_of(SafetensorsDType dtype) {
  for (const DTypeRow& row : kDTypes)
    if (row.dtype == dtype) return row;
  MOE_FAIL("safetensors: invalid SafetensorsDType value ", static_cast<int>(dtype));
}

}  // namespace

const char* safetensors_dtype_name(SafetensorsDType dtype) {
  return row_of(dtype).name;
}
size_t safetensors_dtype_bits(SafetensorsDType dtype) {
  return row_of(dtype).bits;
}

std::optional<SafetensorsDType> parse_safetensors_dtype(const std::string& name) {
  for (const DTypeRow& row : kDTypes)
    if (name == row.name) return row.dtype;
  return std::nullopt;
}

std::optional<DType> to_moe_dtype(SafetensorsDType dtype) {
  switch (dtype) {
    case SafetensorsDType::F64:
      return DType::f64;
    case SafetensorsDType::F32:
      return DType::f32;
    case SafetensorsDType::BF16:
      return DType::bf16;
    case SafetensorsDType::F16:
      return DType::f16;
    case SafetensorsDType::F8_E4M3:
      return DType::fp8_e4m3;
    case SafetensorsDType::F8_E5M2:
      return DType::fp8_e5m2;
    case SafetensorsDType::I64:
      return DType::i64;
    case SafetensorsDType::I32:
      return DType::i32;
    case SafetensorsDType::U8:
    case SafetensorsDType::BOOL:
      return DType::u8;  // same bytes; BOOL holds 0 or 1
    default:
      return std::nullopt;
  }
}

SafetensorsDType to_safetensors_dtype(DType dtype) {
  switch (dtype) {
    case DType::f64:
      return SafetensorsDType::F64;
    case DType::f32:
      return SafetensorsDType::F32;
    case DType::bf16:
      return SafetensorsDType::BF16;
    case DType::f16:
      return SafetensorsDType::F16;
    case DType::fp8_e4m3:
      return SafetensorsDType::F8_E4M3;
    case DType::fp8_e5m2:
      return SafetensorsDType::F8_E5M2;
    case DType::i64:
      return SafetensorsDType::I64;
    case DType::i32:
      return SafetensorsDType::I32;
    case DType::u8:
      return SafetensorsDType::U8;
  }
  MOE_FAIL("safetensors: no safetensors dtype for ", dtype);
}

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated not to overflow when the header was read
  return n;
}

// ---- the mapping -------------------------------------------------------------------------

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    MOE_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      const int err = errno;
      ::close(fd);
      MOE_FAIL(path, ": not a regular file", S_ISDIR(st.st_mode) ? " (a folder)" : "",
               err ? std::string(": ") + std::strerror(err) : std::string());
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {  // mmap of 0 bytes is an error; such a file fails the size check later
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int err = errno;
      ::close(fd);
      MOE_CHECK(p != MAP_FAILED, path, ": mmap of ", size_, " bytes failed: ", std::strerror(err));
      data_ = static_cast<const std::byte*>(p);
    } else {
      ::close(fd);
    }
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// ---- the header --------------------------------------------------------------------------

namespace {

using json = nlohmann::json;

// The Rust reader refuses headers over 100 MB (MAX_HEADER_SIZE); so do we, before parsing.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

uint64_t read_le_u64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint64_t>(p[i]);
  return v;
}

struct ParsedHeader {
  std::vector<SafetensorsTensorInfo> tensors;
  SafetensorsMetadata metadata;
};

// Parses the JSON, remembering the first top-level key seen twice: nlohmann keeps one of the
// two values silently, but a file with two entries of one name is malformed.
json parse_header_json(const std::string& path, const char* begin, const char* end) {
  std::string duplicate;
  std::set<std::string> seen;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) duplicate = key;
    }
    return true;
  };
  const size_t depth =
      json_nesting_depth(std::string_view(begin, static_cast<size_t>(end - begin)));
  MOE_CHECK(depth <= kMaxJsonDepth, path, ": the header nests arrays and objects ", depth,
            " levels deep (a safetensors header has 3)");
  json header;
  try {
    header = json::parse(begin, end, on_event);
  } catch (const json::exception& e) {
    MOE_FAIL(path, ": the header is not valid JSON: ", e.what());
  }
  MOE_CHECK(duplicate.empty(), path, ": the header names '", duplicate,
            "' twice (duplicate tensor names)");
  MOE_CHECK(header.is_object(), path, ": the header must be a JSON object, got ",
            header.type_name());
  return header;
}

uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& path, const std::string& name) {
  uint64_t r;
  MOE_CHECK(!__builtin_mul_overflow(a, b, &r), path, ": tensor '", name,
            "': its shape's size overflows 64 bits");
  return r;
}

SafetensorsTensorInfo parse_entry(const std::string& path, const std::string& name,
                                  const json& entry, uint64_t data_size) {
  const std::string where = path + ": tensor '" + name + "'";
  MOE_CHECK(entry.is_object(), where, ": entry must be an object, got ", entry.type_name());
  SafetensorsTensorInfo info;
  info.name = name;

  auto dtype_it = entry.find("dtype");
  MOE_CHECK(dtype_it != entry.end() && dtype_it->is_string(), where,
            ": missing or non-string \"dtype\"");
  const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
  const auto dtype = parse_safetensors_dtype(dtype_name);
  MOE_CHECK(dtype.has_value(), where, ": unknown dtype \"", dtype_name, "\"");
  info.file_dtype = *dtype;
  info.dtype = to_moe_dtype(*dtype);

  auto shape_it = entry.find("shape");
  MOE_CHECK(shape_it != entry.end() && shape_it->is_array(), where,
            ": missing or non-array \"shape\"");
  uint64_t numel = 1;
  for (const json& d : *shape_it) {
    MOE_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= INT64_MAX, where,
              ": shape entries must be non-negative integers, got ", json_excerpt(d));
    numel = checked_mul(numel, d.get<uint64_t>(), path, name);
    info.shape.push_back(d.get<int64_t>());
  }
  MOE_CHECK(numel <= INT64_MAX, where, ": shape ", shape_str(info.shape), " has too many elements");

  auto offsets_it = entry.find("data_offsets");
  MOE_CHECK(offsets_it != entry.end() && offsets_it->is_array() && offsets_it->size() == 2 &&
                (*offsets_it)[0].is_number_unsigned() && (*offsets_it)[1].is_number_unsigned(),
            where, ": \"data_offsets\" must be [begin, end] with non-negative integers");
  info.begin = (*offsets_it)[0].get<uint64_t>();
  info.end = (*offsets_it)[1].get<uint64_t>();
  MOE_CHECK(info.begin <= info.end, where, ": data_offsets [", info.begin, ", ", info.end,
            "] end before they begin");
  MOE_CHECK(info.end <= data_size, where, ": data_offsets [", info.begin, ", ", info.end,
            "] are out of range: the data buffer has ", data_size, " bytes");

  const uint64_t bits = checked_mul(numel, safetensors_dtype_bits(*dtype), path, name);
  MOE_CHECK(bits % 8 == 0, where, ": ", numel, " elements of ", dtype_name,
            " are not a whole number of bytes");
  MOE_CHECK(info.nbytes() == bits / 8, where, ": data_offsets [", info.begin, ", ", info.end,
            "] hold ", info.nbytes(), " bytes, but shape ", shape_str(info.shape), " of ",
            dtype_name, " needs ", bits / 8);
  return info;
}

SafetensorsMetadata parse_metadata(const std::string& path, const json& value) {
  MOE_CHECK(value.is_object(), path, ": \"__metadata__\" must be an object of strings, got ",
            value.type_name());
  SafetensorsMetadata metadata;
  for (const auto& [key, v] : value.items()) {
    MOE_CHECK(v.is_string(), path, ": \"__metadata__\" value of '", key, "' must be a string, got ",
              json_excerpt(v));
    metadata[key] = v.get<std::string>();
  }
  return metadata;
}

// The data buffer must be covered exactly: in offset order each tensor starts where the last
// ended (no overlap, no hole), and the last ends at the end of the file.
void check_coverage(const std::string& path, std::vector<const SafetensorsTensorInfo*> order,
                    uint64_t data_size) {
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  uint64_t cursor = 0;
  const SafetensorsTensorInfo* previous = nullptr;
  for (const SafetensorsTensorInfo* t : order) {
    MOE_CHECK(t->begin >= cursor, path, ": tensor '", t->name, "' (bytes [", t->begin, ", ", t->end,
              ")) overlaps tensor '", previous ? previous->name : "", "' (bytes [",
              previous ? previous->begin : 0, ", ", cursor, "))");
    MOE_CHECK(t->begin == cursor, path, ": bytes [", cursor, ", ", t->begin,
              ") of the data buffer belong to no tensor (a hole before tensor '", t->name,
              "'); the format requires the buffer to be fully covered");
    cursor = t->end;
    previous = t;
  }
  MOE_CHECK(cursor == data_size, path, ": bytes [", cursor, ", ", data_size,
            ") at the end of the data buffer belong to no tensor; the format requires the "
            "buffer to be fully covered");
}

}  // namespace

// ---- SafetensorsFile ---------------------------------------------------------------------

struct SafetensorsFile::State {
  std::shared_ptr<const MappedFile> mapping;
  uint64_t header_size = 0;
  std::vector<std::string> names;
  std::unordered_map<std::string, SafetensorsTensorInfo> tensors;
  SafetensorsMetadata metadata;

  const std::byte* data_begin() const { return mapping->data() + 8 + header_size; }
};

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto state = std::make_shared<State>();
  state->mapping = std::make_shared<const MappedFile>(path);
  const MappedFile& file = *state->mapping;
  const uint64_t size = file.size();

  MOE_CHECK(size >= 8, path, ": too short to be a safetensors file: ", size,
            " bytes, but the format begins with an 8-byte header length");
  const uint64_t n = read_le_u64(file.data());
  MOE_CHECK(n <= size - 8, path, ": the header length ", n, " goes beyond the end of the file (",
            size, " bytes, so at most ", size - 8, " header bytes)");
  MOE_CHECK(n <= kMaxHeaderBytes, path, ": the header length ", n, " exceeds the limit of ",
            kMaxHeaderBytes, " bytes");
  state->header_size = n;
  const uint64_t data_size = size - 8 - n;

  const char* header_begin = reinterpret_cast<const char*>(file.data() + 8);
  const json header = parse_header_json(path, header_begin, header_begin + n);

  std::vector<const SafetensorsTensorInfo*> order;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      state->metadata = parse_metadata(path, value);
      continue;
    }
    state->tensors.emplace(key, parse_entry(path, key, value, data_size));
    state->names.push_back(key);
  }
  for (const auto& [key, info] : state->tensors) order.push_back(&info);
  check_coverage(path, std::move(order), data_size);
  std::sort(state->names.begin(), state->names.end());

  SafetensorsFile result;
  result.state_ = std::move(state);
  return result;
}

const std::string& SafetensorsFile::path() const {
  return state_->mapping->path();
}
const std::vector<std::string>& SafetensorsFile::names() const {
  return state_->names;
}
bool SafetensorsFile::contains(const std::string& name) const {
  return state_->tensors.count(name) != 0;
}
const SafetensorsMetadata& SafetensorsFile::metadata() const {
  return state_->metadata;
}
uint64_t SafetensorsFile::header_size() const {
  return state_->header_size;
}
uint64_t SafetensorsFile::file_size() const {
  return state_->mapping->size();
}

const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = state_->tensors.find(name);
  MOE_CHECK(it != state_->tensors.end(), path(), ": no tensor named '", name, "'");
  return it->second;
}

SafetensorsView SafetensorsFile::view(const std::string& name) const {
  const SafetensorsTensorInfo& i = info(name);
  SafetensorsView v;
  v.info_ = i;
  v.bytes_ = {state_->data_begin() + i.begin, static_cast<size_t>(i.nbytes())};
  v.mapping_ = state_->mapping;
  return v;
}

Tensor SafetensorsFile::load(const std::string& name, Device device,
                             std::optional<DType> dtype) const {
  const SafetensorsTensorInfo& i = info(name);
  MOE_CHECK(i.dtype.has_value(), path(), ": tensor '", name, "' has dtype ",
            safetensors_dtype_name(i.file_dtype), ", which moe::Tensor cannot hold (use view())");
  // Bytes go to the target device as they are; a cast, if any, runs there (on a GPU the
  // transfer of bf16 is half that of the f32 it may become).
  Tensor t = Tensor::empty(i.shape, *i.dtype, device);
  copy_bytes(t.raw(), device, state_->data_begin() + i.begin, Device::cpu(), i.nbytes());
  if (dtype.has_value() && *dtype != *i.dtype) t = t.to(*dtype);
  return t;
}

// ---- SafetensorsView ---------------------------------------------------------------------

void SafetensorsView::check_as(DType requested, size_t alignment) const {
  const std::string file = mapping_ ? mapping_->path() : std::string();
  MOE_CHECK(info_.dtype.has_value() && *info_.dtype == requested, file, ": tensor '", info_.name,
            "' has dtype ", safetensors_dtype_name(info_.file_dtype), ", viewed as ", requested);
  MOE_CHECK(reinterpret_cast<uintptr_t>(bytes_.data()) % alignment == 0, file, ": tensor '",
            info_.name, "' is not aligned to ", alignment,
            " bytes in the file (the header length is not a multiple of 8?); use bytes()");
}

}  // namespace moe::io
