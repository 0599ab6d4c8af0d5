// Common refinement of two views and boxes re-read in it (view_refine.h).
#include "moe/checkpoint/view_refine.h"

#include <algorithm>

#include "moe/core/error.h"

namespace moe::checkpoint {
namespace {

// P_0 = numel, ..., P_n = 1: the suffix products of `shape`, outermost first.
std::vector<int64_t> suffix_products(const Shape& shape) {
  std::vector<int64_t> p(shape.size() + 1, 1);
  for (size_t d = shape.size(); d-- > 0;) p[d] = p[d + 1] * shape[d];
  return p;
}

int64_t numel_of(const Shape& shape) {
  return suffix_products(shape).front();
}

}  // namespace

std::optional<Shape> common_refinement(const Shape& a, const Shape& b) {
  if (a == b) return a;
  for (int64_t s : a)
    if (s < 0) return std::nullopt;
  for (int64_t s : b)
    if (s < 0) return std::nullopt;
  const int64_t numel = numel_of(a);
  if (numel != numel_of(b) || numel == 0) return std::nullopt;
  std::vector<int64_t> u = suffix_products(a);
  const std::vector<int64_t> pb = suffix_products(b);
  u.insert(u.end(), pb.begin(), pb.end());
  std::sort(u.begin(), u.end());
  u.erase(std::unique(u.begin(), u.end()), u.end());
  Shape fine;
  for (size_t i = u.size() - 1; i > 0; --i) {
    if (u[i] % u[i - 1] != 0) return std::nullopt;
    fine.push_back(u[i] / u[i - 1]);
  }
  return fine;
}

std::vector<StridedBox> refine_box(const StridedBox& box, const Shape& view, const Shape& fine) {
  const size_t n = view.size();
  MOE_CHECK(box.box.shape.size() == n && box.box.offset.size() == n && box.strides.size() == n,
            "refine_box: box ", box_str(box.box), " is not a box of view ", shape_str(view));
  if (view == fine) {
    if (box.box.numel() == 0) return {};
    return {box};
  }
  MOE_CHECK(common_refinement(view, fine) == fine, "refine_box: ", shape_str(fine),
            " does not refine ", shape_str(view));
  // Dim k of the view is the dims [first[k], first[k + 1]) of `fine`.
  const std::vector<int64_t> pv = suffix_products(view), pf = suffix_products(fine);
  std::vector<size_t> first(n + 1);
  for (size_t k = 0; k <= n; ++k)
    first[k] = static_cast<size_t>(std::find(pf.begin(), pf.end(), pv[k]) - pf.begin());

  // The partial products over dims 0..k: strided boxes over the fine dims [0, first[k + 1]).
  std::vector<StridedBox> partial{StridedBox{Box{}, box.base, {}}};
  for (size_t k = 0; k < n; ++k) {
    const Shape group(fine.begin() + static_cast<std::ptrdiff_t>(first[k]),
                      fine.begin() + static_cast<std::ptrdiff_t>(first[k + 1]));
    const std::vector<int64_t> group_strides = row_major_strides(group);
    const int64_t o = box.box.offset[k], s = box.box.shape[k];
    if (s == 0) return {};
    // Extent-1 view dims have no fine dims; their one coordinate is o = 0.
    const std::vector<Box> pieces =
        group.empty() ? std::vector<Box>{Box{}} : flat_range_boxes(group, o, o + s);
    std::vector<StridedBox> next;
    next.reserve(partial.size() * pieces.size());
    for (const StridedBox& head : partial)
      for (const Box& piece : pieces) {
        StridedBox b = head;
        int64_t origin = 0;  // the view coordinate of the piece's first element
        for (size_t j = 0; j < group.size(); ++j) {
          origin += piece.offset[j] * group_strides[j];
          b.box.offset.push_back(piece.offset[j]);
          b.box.shape.push_back(piece.shape[j]);
          b.strides.push_back(group_strides[j] * box.strides[k]);
        }
        b.base += (origin - (group.empty() ? 0 : o)) * box.strides[k];
        next.push_back(std::move(b));
      }
    partial = std::move(next);
  }
  return partial;
}

}  // namespace moe::checkpoint
