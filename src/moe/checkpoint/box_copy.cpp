// Boxes, flat ranges of boxes, and copies between box buffers (box_copy.h).
#include "moe/checkpoint/box_copy.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "moe/core/error.h"

namespace moe::checkpoint {
namespace {

int64_t product(const Shape& shape, size_t from) {
  int64_t n = 1;
  for (size_t d = from; d < shape.size(); ++d) n *= shape[d];
  return n;
}

// Appends the boxes of [begin, end) (begin < end) of the dims d.. of `shape`, below the fixed
// coordinates `prefix` (offset, extent 1 each) of dims 0..d-1.
void range_boxes(const Shape& shape, size_t d, int64_t begin, int64_t end, Box& prefix,
                 std::vector<Box>& out) {
  const size_t n = shape.size();
  auto emit = [&](int64_t first, int64_t count) {  // rows [first, first + count) of dim d, whole
    Box box = prefix;
    box.offset.push_back(first);
    box.shape.push_back(count);
    for (size_t k = d + 1; k < n; ++k) {
      box.offset.push_back(0);
      box.shape.push_back(shape[k]);
    }
    out.push_back(std::move(box));
  };
  auto recurse = [&](int64_t row, int64_t b, int64_t e) {  // [b, e) inside row `row` of dim d
    prefix.offset.push_back(row);
    prefix.shape.push_back(1);
    range_boxes(shape, d + 1, b, e, prefix, out);
    prefix.offset.pop_back();
    prefix.shape.pop_back();
  };
  if (d == n) {  // no dims left: the single element of a 0-d (sub)box
    out.push_back(prefix);
    return;
  }
  const int64_t inner = product(shape, d + 1);
  if (d + 1 == n) {
    emit(begin, end - begin);
    return;
  }
  int64_t first_row = begin / inner;
  const int64_t last_row = end / inner;  // the row holding `end` (exclusive bound)
  const int64_t head = begin % inner, tail = end % inner;
  if (first_row == last_row) {  // inside one row
    recurse(first_row, head, tail);
    return;
  }
  if (head != 0) recurse(first_row++, head, inner);
  if (first_row < last_row) emit(first_row, last_row - first_row);
  if (tail != 0) recurse(last_row, 0, tail);
}

void check_strided(const StridedBox& b, const char* what) {
  MOE_CHECK(b.box.offset.size() == b.box.shape.size() && b.strides.size() == b.box.shape.size(),
            "copy_strided: the ", what, " box ", box_str(b.box), " has ", b.strides.size(),
            " strides for ", b.box.shape.size(), " dims");
}

}  // namespace

int64_t Box::numel() const {
  return product(shape, 0);
}

std::string box_str(const Box& box) {
  std::ostringstream out;
  if (box.shape.empty()) return "[] (0-d)";
  for (size_t d = 0; d < box.shape.size(); ++d) {
    const int64_t o = d < box.offset.size() ? box.offset[d] : 0;
    out << (d ? " x " : "") << "[" << o << ", " << o + box.shape[d] << ")";
  }
  return out.str();
}

std::vector<int64_t> row_major_strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

std::vector<Box> flat_range_boxes(const Shape& box_shape, int64_t begin, int64_t end) {
  for (int64_t s : box_shape)
    MOE_CHECK(s >= 0, "flat_range_boxes: negative extent in shape ", shape_str(box_shape));
  const int64_t numel = product(box_shape, 0);
  MOE_CHECK(0 <= begin && begin <= end && end <= numel, "flat_range_boxes: range [", begin, ", ",
            end, ") is not inside a box of shape ", shape_str(box_shape), " (", numel,
            " elements)");
  std::vector<Box> out;
  if (begin == end) return out;
  Box prefix;
  range_boxes(box_shape, 0, begin, end, prefix, out);
  return out;
}

std::optional<Box> intersect(const Box& a, const Box& b) {
  MOE_CHECK(a.shape.size() == b.shape.size() && a.offset.size() == a.shape.size() &&
                b.offset.size() == b.shape.size(),
            "intersect: boxes of different ranks: ", box_str(a), " and ", box_str(b));
  Box out;
  out.offset.resize(a.shape.size());
  out.shape.resize(a.shape.size());
  for (size_t d = 0; d < a.shape.size(); ++d) {
    const int64_t lo = std::max(a.offset[d], b.offset[d]);
    const int64_t hi = std::min(a.offset[d] + a.shape[d], b.offset[d] + b.shape[d]);
    if (hi <= lo) return std::nullopt;
    out.offset[d] = lo;
    out.shape[d] = hi - lo;
  }
  return out;
}

bool box_inside(const Box& box, const Shape& view) {
  if (box.shape.size() != view.size() || box.offset.size() != view.size()) return false;
  for (size_t d = 0; d < view.size(); ++d)
    if (box.offset[d] < 0 || box.shape[d] < 0 || box.offset[d] + box.shape[d] > view[d])
      return false;
  return true;
}

StridedBox row_major(const Box& box, int64_t base) {
  return StridedBox{box, base, row_major_strides(box.shape)};
}

int64_t copy_strided(const void* src, const StridedBox& src_box, void* dst,
                     const StridedBox& dst_box, size_t element_size) {
  check_strided(src_box, "source");
  check_strided(dst_box, "destination");
  const std::optional<Box> common = intersect(src_box.box, dst_box.box);
  if (!common) return 0;
  const size_t n = common->shape.size();
  int64_t s = src_box.base, t = dst_box.base;  // element positions of the first common element
  for (size_t d = 0; d < n; ++d) {
    s += (common->offset[d] - src_box.box.offset[d]) * src_box.strides[d];
    t += (common->offset[d] - dst_box.box.offset[d]) * dst_box.strides[d];
  }
  // Merge the innermost dims into one run of `run` elements, contiguous in both buffers: a dim
  // joins when its stride is the run so far in both (or it has extent 1).
  size_t outer = n;
  int64_t run = 1;
  while (outer > 0) {
    const size_t d = outer - 1;
    if (common->shape[d] != 1 && (src_box.strides[d] != run || dst_box.strides[d] != run)) break;
    run *= common->shape[d];
    --outer;
  }
  const auto* from = static_cast<const char*>(src);
  auto* to = static_cast<char*>(dst);
  const size_t run_bytes = static_cast<size_t>(run) * element_size;
  // Odometer over dims [0, outer).
  std::vector<int64_t> index(outer, 0);
  while (true) {
    std::memcpy(to + static_cast<size_t>(t) * element_size,
                from + static_cast<size_t>(s) * element_size, run_bytes);
    size_t d = outer;
    while (d > 0) {
      --d;
      if (++index[d] < common->shape[d]) {
        s += src_box.strides[d];
        t += dst_box.strides[d];
        break;
      }
      s -= (common->shape[d] - 1) * src_box.strides[d];
      t -= (common->shape[d] - 1) * dst_box.strides[d];
      index[d] = 0;
      if (d == 0) return common->numel();
    }
    if (outer == 0) return common->numel();
  }
}

int64_t copy_box(const void* src, const Box& src_box, void* dst, const Box& dst_box,
                 size_t element_size) {
  return copy_strided(src, row_major(src_box), dst, row_major(dst_box), element_size);
}

}  // namespace moe::checkpoint
