// Reading sharded checkpoints under any mapping (sharded_checkpoint.h): a requested slice is
// the boxes of its flat range; each is intersected with the stored boxes in the common
// refinement of the two views (view_refine.h), and the intersections are copied out of the
// memory-mapped shard files, converted when the dtypes differ.
#include <filesystem>
#include <set>

#include "moe/checkpoint/sharded_checkpoint.h"
#include "moe/checkpoint/sharded_format.h"
#include "moe/checkpoint/view_refine.h"
#include "moe/core/crc32c.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"

namespace moe::checkpoint {

namespace fs = std::filesystem;

struct ShardedCheckpointReader::StoredTensor {
  std::string name;
  sharded::TensorRecord record;
  mutable std::vector<char> verified;  // per box: CRC checked (guarded by the reader's mutex_)
};

namespace {

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string hex32(uint32_t v) {
  static const char* digits = "0123456789abcdef";
  std::string out = "0x00000000";
  for (int i = 9; i >= 2; --i, v >>= 4) out[static_cast<size_t>(i)] = digits[v & 0xf];
  return out;
}

}  // namespace

ShardedCheckpointReader::ShardedCheckpointReader(std::string folder, ReaderOptions options)
    : folder_(std::move(folder)), options_(options) {
  const std::string path = (fs::path(folder_) / kShardedIndexFile).string();
  MOE_CHECK(fs::is_directory(folder_), "sharded checkpoint ", folder_, " is not a folder");
  MOE_CHECK(fs::exists(path), "sharded checkpoint ", folder_, " has no ", kShardedIndexFile,
            " (not a sharded checkpoint, or its save did not finish)");
  const nlohmann::json j = read_json_file(path, "sharded checkpoint index");
  MOE_CHECK(j.is_object(), path, ": expected a JSON object");
  const std::string format = sharded::string_field(j, "format", path);
  MOE_CHECK(format == sharded::kFormat, path, ": field 'format' is '", format, "', expected '",
            sharded::kFormat, "'");
  const int64_t version = sharded::int_field(j, "version", path);
  MOE_CHECK(version == kShardedCheckpointVersion, path, ": version ", version,
            " is not one this build reads (", kShardedCheckpointVersion, ")");
  const int64_t world = sharded::int_field(j, "world_size", path);
  MOE_CHECK(world >= 1 && world <= (1 << 30), path, ": field 'world_size' is ", world);
  world_ = static_cast<int>(world);
  const auto tensors = j.find("tensors");
  MOE_CHECK(tensors != j.end() && tensors->is_object(), path,
            ": field 'tensors' is missing or not an object");
  std::set<std::string> files;
  for (const auto& [name, tj] : tensors->items()) {
    auto t = std::make_unique<StoredTensor>();
    t->name = name;
    t->record = sharded::parse_tensor(tj, name, path);
    sharded::check_tiling(t->record, name, path);
    t->verified.assign(t->record.boxes.size(), 0);
    for (const auto& b : t->record.boxes) files.insert(b.file);
    tensors_.emplace(name, std::move(t));
  }
  for (const std::string& file : files)
    MOE_CHECK(fs::exists(fs::path(folder_) / file), path, " lists ", file,
              ", which is missing from ", folder_);
}

ShardedCheckpointReader::~ShardedCheckpointReader() = default;

std::vector<std::string> ShardedCheckpointReader::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors_) names.push_back(name);
  return names;
}

bool ShardedCheckpointReader::has(const std::string& name) const {
  return tensors_.count(name) != 0;
}

const ShardedCheckpointReader::StoredTensor& ShardedCheckpointReader::tensor(
    const std::string& name) const {
  const auto it = tensors_.find(name);
  MOE_CHECK(it != tensors_.end(), "sharded checkpoint ", folder_, " has no tensor '", name, "'");
  return *it->second;
}

const Shape& ShardedCheckpointReader::global_shape(const std::string& name) const {
  return tensor(name).record.global_shape;
}
const Shape& ShardedCheckpointReader::view_shape(const std::string& name) const {
  return tensor(name).record.view_shape;
}
DType ShardedCheckpointReader::dtype(const std::string& name) const {
  return tensor(name).record.dtype;
}

io::SafetensorsView ShardedCheckpointReader::box_bytes(const StoredTensor& t, size_t i,
                                                       bool verify) const {
  const sharded::BoxRecord& b = t.record.boxes[i];
  const std::string path = (fs::path(folder_) / b.file).string();
  io::SafetensorsView view;
  bool checked = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = files_.find(b.file);
    if (it == files_.end()) it = files_.emplace(b.file, io::SafetensorsFile::open(path)).first;
    const io::SafetensorsFile& file = it->second;
    MOE_CHECK(file.contains(b.key), path, " has no tensor '", b.key, "' (box ", box_str(b.box),
              " of tensor '", t.name, "' in ", kShardedIndexFile, ")");
    const io::SafetensorsTensorInfo& info = file.info(b.key);
    MOE_CHECK(info.dtype == t.record.dtype && info.shape == b.box.shape, path, ": tensor '", b.key,
              "' is ", io::safetensors_dtype_name(info.file_dtype), " ", shape_str(info.shape),
              ", but ", kShardedIndexFile, " says box ", box_str(b.box), " of tensor '", t.name,
              "' is ", t.record.dtype, " ", shape_str(b.box.shape));
    view = file.view(b.key);
    checked = t.verified[i] != 0;
  }
  if (verify && !checked) {
    const uint32_t crc = crc32c(view.bytes().data(), view.bytes().size());
    MOE_CHECK(crc == b.crc32c, path, ": tensor '", t.name, "', box ", box_str(b.box), " (key '",
              b.key, "'): the bytes have CRC-32C ", hex32(crc), " but ", kShardedIndexFile,
              " says ", hex32(b.crc32c), ": the file is corrupt");
    std::lock_guard<std::mutex> lock(mutex_);
    t.verified[i] = 1;
  }
  return view;
}

void ShardedCheckpointReader::read(const std::string& name, const Shape& view_shape,
                                   const std::vector<int64_t>& box_offset, const Shape& box_shape,
                                   int64_t begin, int64_t end, Tensor& out) const {
  const StoredTensor& t = tensor(name);
  const sharded::TensorRecord& rec = t.record;
  const std::string where = "sharded checkpoint " + folder_ + ": reading tensor '" + name + "'";
  const Box request{box_offset, box_shape};
  MOE_CHECK(box_inside(request, view_shape), where, ": box ", box_str(request),
            " is not inside the requested view ", shape_str(view_shape));
  MOE_CHECK(0 <= begin && begin <= end && end <= request.numel(), where, ": flat range [", begin,
            ", ", end, ") is not inside the box of ", request.numel(), " elements");
  MOE_CHECK(out.defined() && out.numel() == end - begin, where, ": the output ",
            out.defined() ? out.str() : std::string("(undefined)"), " does not hold ", end - begin,
            " elements");
  const std::optional<Shape> fine = common_refinement(view_shape, rec.view_shape);
  MOE_CHECK(fine.has_value(), where, ": the requested view ", shape_str(view_shape),
            " and the stored view ", shape_str(rec.view_shape),
            " are not row-major reshapes of one shape (views must refine a common shape; "
            "the global shape is ",
            shape_str(rec.global_shape), ")");
  if (begin == end) return;

  Tensor host = out.is_cuda() ? Tensor::empty(out.shape(), out.dtype(), Device::cpu()) : out;
  // Where the requested elements go in `host`: the boxes of the flat range, in order.
  std::vector<StridedBox> targets;
  int64_t pos = 0;
  for (Box sub : flat_range_boxes(box_shape, begin, end)) {
    for (size_t d = 0; d < sub.offset.size(); ++d) sub.offset[d] += box_offset[d];
    const int64_t count = sub.numel();
    for (StridedBox& s : refine_box(row_major(sub, pos), view_shape, *fine))
      targets.push_back(std::move(s));
    pos += count;
  }
  const size_t stored_size = dtype_size(rec.dtype), out_size = dtype_size(out.dtype());
  int64_t copied = 0;
  for (size_t i = 0; i < rec.boxes.size(); ++i) {
    std::optional<io::SafetensorsView> bytes;  // mapped on the first intersection
    for (const StridedBox& source : refine_box(row_major(rec.boxes[i].box), rec.view_shape, *fine))
      for (const StridedBox& target : targets) {
        const std::optional<Box> common = intersect(source.box, target.box);
        if (!common) continue;
        if (!bytes) bytes = box_bytes(t, i, options_.verify_on_read);
        const void* src = bytes->bytes().data();
        if (rec.dtype == out.dtype()) {
          copied += copy_strided(src, source, host.raw(), target, stored_size);
          continue;
        }
        // Another dtype: the intersection gathered, converted, then scattered.
        Tensor part = Tensor::empty(common->shape, rec.dtype, Device::cpu());
        copy_strided(src, source, part.raw(), row_major(*common), stored_size);
        const Tensor converted = part.to(out.dtype());
        copied += copy_strided(converted.raw(), row_major(*common), host.raw(), target, out_size);
      }
  }
  MOE_CHECK(copied == end - begin, where, ": the stored boxes hold ", copied, " of the ",
            end - begin, " requested elements");  // unreachable after check_tiling
  if (out.is_cuda()) out.copy_(host);
}

void ShardedCheckpointReader::read(const std::string& name, const TensorSlice& slice,
                                   Tensor& out) const {
  TensorSlice s = slice;
  if (s.global_shape.empty()) s.global_shape = global_shape(name);
  MOE_CHECK(s.global_shape == global_shape(name), "sharded checkpoint ", folder_, ": tensor '",
            name, "' has global shape ", shape_str(global_shape(name)), ", not ",
            shape_str(s.global_shape));
  s = s.resolved();
  read(name, s.view_shape, s.box_offset, s.box_shape, s.begin, s.end, out);
}

Tensor ShardedCheckpointReader::read_full(const std::string& name,
                                          std::optional<DType> dtype) const {
  const sharded::TensorRecord& rec = tensor(name).record;
  Tensor out = Tensor::empty(rec.global_shape, dtype.value_or(rec.dtype), Device::cpu());
  const int64_t n = numel_of(rec.view_shape);
  read(name, rec.view_shape, std::vector<int64_t>(rec.view_shape.size(), 0), rec.view_shape, 0, n,
       out);
  return out;
}

void ShardedCheckpointReader::verify_all() const {
  for (const auto& [name, t] : tensors_)
    for (size_t i = 0; i < t->record.boxes.size(); ++i) box_bytes(*t, i, true);
}

}  // namespace moe::checkpoint
