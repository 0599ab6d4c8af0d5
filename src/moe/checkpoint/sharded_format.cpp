// Tensor records of sharded checkpoints: JSON in and out, and the coverage check
// (sharded_format.h).
#include "moe/checkpoint/sharded_format.h"

#include <algorithm>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>

#include "moe/checkpoint/view_refine.h"
#include "moe/core/error.h"
#include "moe/core/json_file.h"
#include "moe/io/safetensors.h"

namespace moe::checkpoint::sharded {
namespace {

using nlohmann::json;

const json& member(const json& j, const char* field, const std::string& where) {
  MOE_CHECK(j.is_object(), where, ": expected an object, got ", json_excerpt(j));
  const auto it = j.find(field);
  MOE_CHECK(it != j.end(), where, ": field '", field, "' is missing");
  return *it;
}

std::vector<int64_t> int_list(const json& j, const char* field, const std::string& where) {
  const json& v = member(j, field, where);
  MOE_CHECK(v.is_array(), where, ": field '", field,
            "' must be an array of non-negative integers, got ", json_excerpt(v));
  std::vector<int64_t> out;
  for (const json& e : v) {
    MOE_CHECK(e.is_number_unsigned() || (e.is_number_integer() && e.get<int64_t>() >= 0), where,
              ": field '", field, "' must be an array of non-negative integers, got ",
              json_excerpt(v));
    out.push_back(e.get<int64_t>());
  }
  return out;
}

std::string coords_str(const std::vector<int64_t>& x) {
  std::ostringstream out;
  out << "(";
  for (size_t d = 0; d < x.size(); ++d) out << (d ? ", " : "") << x[d];
  out << ")";
  return out.str();
}

// The first element (row-major) of the dims d.. under the fixed coordinates `prefix` that none
// of `boxes` holds (the boxes do not overlap), or nullopt.
std::optional<std::vector<int64_t>> first_gap(const std::vector<const Box*>& boxes,
                                              const Shape& view, size_t d,
                                              std::vector<int64_t>& prefix) {
  if (d == view.size()) {
    if (!boxes.empty()) return std::nullopt;
    return prefix;
  }
  std::vector<int64_t> cuts{0, view[d]};
  for (const Box* b : boxes) {
    cuts.push_back(b->offset[d]);
    cuts.push_back(b->offset[d] + b->shape[d]);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    const int64_t x = cuts[i];
    std::vector<const Box*> active;
    for (const Box* b : boxes)
      if (b->offset[d] <= x && x < b->offset[d] + b->shape[d]) active.push_back(b);
    prefix.push_back(x);
    if (active.empty()) {
      std::vector<int64_t> gap = prefix;
      gap.resize(view.size(), 0);
      prefix.pop_back();
      return gap;
    }
    auto gap = first_gap(active, view, d + 1, prefix);
    prefix.pop_back();
    if (gap) return gap;
  }
  return std::nullopt;
}

}  // namespace

int64_t int_field(const json& j, const char* field, const std::string& path) {
  const json& v = member(j, field, path);
  MOE_CHECK(v.is_number_integer(), path, ": field '", field, "' must be an integer, got ",
            json_excerpt(v));
  return v.get<int64_t>();
}

std::string string_field(const json& j, const char* field, const std::string& path) {
  const json& v = member(j, field, path);
  MOE_CHECK(v.is_string(), path, ": field '", field, "' must be a string, got ", json_excerpt(v));
  return v.get<std::string>();
}

nlohmann::ordered_json to_json(const TensorRecord& t) {
  nlohmann::ordered_json out;
  out["dtype"] = io::safetensors_dtype_name(io::to_safetensors_dtype(t.dtype));
  out["global_shape"] = t.global_shape;
  out["view_shape"] = t.view_shape;
  out["boxes"] = nlohmann::ordered_json::array();
  for (const BoxRecord& b : t.boxes) {
    nlohmann::ordered_json box;
    box["offset"] = b.box.offset;
    box["shape"] = b.box.shape;
    box["file"] = b.file;
    box["key"] = b.key;
    box["crc32c"] = b.crc32c;
    out["boxes"].push_back(std::move(box));
  }
  return out;
}

TensorRecord parse_tensor(const json& j, const std::string& name, const std::string& path) {
  const std::string where = path + ": tensor '" + name + "'";
  TensorRecord t;
  const std::string dtype = string_field(j, "dtype", where);
  const auto file_dtype = io::parse_safetensors_dtype(dtype);
  const auto moe_dtype = file_dtype ? io::to_moe_dtype(*file_dtype) : std::nullopt;
  MOE_CHECK(moe_dtype.has_value() && *file_dtype != io::SafetensorsDType::BOOL, where,
            ": field 'dtype' is '", dtype, "', not a dtype moecore stores (F32, BF16, ...)");
  t.dtype = *moe_dtype;
  t.global_shape = int_list(j, "global_shape", where);
  t.view_shape = int_list(j, "view_shape", where);
  MOE_CHECK(common_refinement(t.global_shape, t.view_shape).has_value(), where, ": view_shape ",
            shape_str(t.view_shape), " is not a row-major reshape of global_shape ",
            shape_str(t.global_shape));
  const json& boxes = member(j, "boxes", where);
  MOE_CHECK(boxes.is_array(), where, ": field 'boxes' must be an array, got ", json_excerpt(boxes));
  for (size_t i = 0; i < boxes.size(); ++i) {
    const std::string at = where + ": boxes[" + std::to_string(i) + "]";
    BoxRecord b;
    b.box.offset = int_list(boxes[i], "offset", at);
    b.box.shape = int_list(boxes[i], "shape", at);
    MOE_CHECK(box_inside(b.box, t.view_shape) && b.box.numel() > 0, at, ": box ", box_str(b.box),
              " is empty or not inside view_shape ", shape_str(t.view_shape));
    b.file = string_field(boxes[i], "file", at);
    MOE_CHECK(
        !b.file.empty() && b.file.find('/') == std::string::npos && b.file != "." && b.file != "..",
        at, ": field 'file' must name a file of the checkpoint folder, got '", b.file, "'");
    b.key = string_field(boxes[i], "key", at);
    const int64_t crc = int_field(boxes[i], "crc32c", at);
    MOE_CHECK(crc >= 0 && crc <= 0xffffffffLL, at, ": field 'crc32c' is ", crc,
              ", not a 32-bit checksum");
    b.crc32c = static_cast<uint32_t>(crc);
    b.source = path;
    t.boxes.push_back(std::move(b));
  }
  return t;
}

void check_tiling(const TensorRecord& t, const std::string& name, const std::string& where) {
  const Shape& view = t.view_shape;
  const size_t n = view.size();
  // Overlaps: sort along the dim whose box offsets are most varied, then compare each box only
  // with those that start before it ends along that dim.
  size_t sort_dim = 0;
  size_t most = 0;
  for (size_t d = 0; d < n; ++d) {
    std::set<int64_t> offsets;
    for (const BoxRecord& b : t.boxes) offsets.insert(b.box.offset[d]);
    if (offsets.size() > most) {
      most = offsets.size();
      sort_dim = d;
    }
  }
  std::vector<size_t> order(t.boxes.size());
  std::iota(order.begin(), order.end(), size_t{0});
  auto lo = [&](size_t i) { return n ? t.boxes[i].box.offset[sort_dim] : 0; };
  auto hi = [&](size_t i) { return n ? lo(i) + t.boxes[i].box.shape[sort_dim] : 1; };
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lo(a) < lo(b); });
  int64_t covered = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const BoxRecord& a = t.boxes[order[i]];
    covered += a.box.numel();
    for (size_t k = i + 1; k < order.size() && lo(order[k]) < hi(order[i]); ++k) {
      const BoxRecord& b = t.boxes[order[k]];
      const auto common = intersect(a.box, b.box);
      MOE_CHECK(!common.has_value(), where, ": tensor '", name, "': box ", box_str(a.box), " (",
                a.file, " '", a.key, "', from ", a.source, ") and box ", box_str(b.box), " (",
                b.file, " '", b.key, "', from ", b.source, ") overlap in ", box_str(*common),
                ": every element must be written by exactly one rank (a tensor replicated "
                "over ranks must be written by one of its replicas only)");
    }
  }
  int64_t total = 1;
  for (int64_t s : view) total *= s;
  if (covered == total) return;
  std::vector<const Box*> boxes;
  for (const BoxRecord& b : t.boxes) boxes.push_back(&b.box);
  std::vector<int64_t> prefix;
  const auto gap = first_gap(boxes, view, 0, prefix);
  MOE_CHECK(gap.has_value(), where, ": tensor '", name, "': boxes hold ", covered, " of ", total,
            " elements but no gap was found");  // unreachable without overlaps
  int64_t flat = 0;
  for (size_t d = 0; d < n; ++d) flat = flat * view[d] + (*gap)[d];
  MOE_FAIL(where, ": tensor '", name, "': the boxes hold ", covered, " of its ", total,
           " elements; the first missing one is ", coords_str(*gap), " of view ", shape_str(view),
           " (element ", flat,
           " row-major): no rank wrote it, or a shard is missing from the index");
}

}  // namespace moe::checkpoint::sharded
