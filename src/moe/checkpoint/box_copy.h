// Boxes of a row-major array and copies between them: the arithmetic under sharded checkpoints
// (sharded_checkpoint.h), where every rank's piece of a tensor is a rectangular box of the
// tensor's "view" shape, and a distributed optimizer keeps only a flat range of that box.
//
// A box of a view of shape V is an offset o and a shape s with 0 <= o_d, o_d + s_d <= V_d. Its
// buffer is row-major in s: element (x_0, ..., x_{n-1}) of the view, inside the box, is at
//   sum_d (x_d - o_d) * stride_d,   stride_d = s_{d+1} * ... * s_{n-1}.
// A StridedBox generalises the buffer to any strides (elements, >= 0) and a base element: the
// layout a box of one view has when it is re-read in a finer view (view_refine.h).
//
// flat_range_boxes(s, b, e): the flat range [b, e) of a box of shape s (row-major) as the fewest
// sub-boxes whose row-major concatenation is the range, in order. With inner = s_1 * ... *
// s_{n-1}: the rows b / inner .. e / inner of dim 0 split the range into a head (the end of the
// row holding b, recursively a range of the inner shape), the whole rows between (one box) and
// a tail (the start of the row holding e, recursively). A range inside one row recurses into
// it. At most 2 n - 1 boxes for n >= 1 dims.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moe/core/tensor.h"

namespace moe::checkpoint {

struct Box {
  std::vector<int64_t> offset;
  Shape shape;

  int64_t numel() const;
  bool operator==(const Box&) const = default;
};

// "[o0, o1) x [o1, ...)": the box as half-open intervals per dim, for messages.
std::string box_str(const Box& box);

// Row-major strides (elements) of `shape`: stride_d = shape_{d+1} * ... * shape_{n-1}.
std::vector<int64_t> row_major_strides(const Shape& shape);

// The sub-boxes of [begin, end) of a box of shape `box_shape` (offsets within that box), in
// row-major order; none when begin == end. A 0-d shape has the one box {}, {} for [0, 1).
// Errors (naming the range and the shape) unless 0 <= begin <= end <= numel(box_shape).
std::vector<Box> flat_range_boxes(const Shape& box_shape, int64_t begin, int64_t end);

// The common part of two boxes of one view (same rank), or nullopt when it holds no element.
std::optional<Box> intersect(const Box& a, const Box& b);

// Whether `box` lies inside a view of shape `view` (same rank, offsets >= 0, ends <= view).
bool box_inside(const Box& box, const Shape& view);

// A box of a view whose buffer has arbitrary strides: element x of the box is at
//   base + sum_d (x_d - box.offset_d) * strides_d   (elements of the buffer).
struct StridedBox {
  Box box;
  int64_t base = 0;
  std::vector<int64_t> strides;
};

// The row-major layout of `box` starting at element `base`.
StridedBox row_major(const Box& box, int64_t base = 0);

// Copies the elements of the intersection of src.box and dst.box from the buffer `src` to the
// buffer `dst` (host memory, elements of `element_size` bytes); returns how many were copied
// (0 for an empty intersection). The innermost dims that are contiguous in both buffers are
// merged into runs copied with memcpy; the outer dims are walked with an odometer.
int64_t copy_strided(const void* src, const StridedBox& src_box, void* dst,
                     const StridedBox& dst_box, size_t element_size);

// copy_strided for two row-major boxes: the intersection of `src_box` (buffer `src`) copied into
// `dst_box` (buffer `dst`).
int64_t copy_box(const void* src, const Box& src_box, void* dst, const Box& dst_box,
                 size_t element_size);

}  // namespace moe::checkpoint
