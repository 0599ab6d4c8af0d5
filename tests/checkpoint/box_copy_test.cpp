// Boxes under sharded checkpoints: flat ranges as sub-boxes (exhaustive over small shapes), box
// copies against an element-by-element reference, common refinements of two views, and boxes
// re-read in a refinement.
#include "moe/checkpoint/box_copy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "moe/checkpoint/view_refine.h"

namespace moe::checkpoint {
namespace {

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Row-major flat index of `x` in `shape`.
int64_t ravel(const std::vector<int64_t>& x, const Shape& shape) {
  int64_t f = 0;
  for (size_t d = 0; d < shape.size(); ++d) f = f * shape[d] + x[d];
  return f;
}

std::vector<int64_t> unravel(int64_t f, const Shape& shape) {
  std::vector<int64_t> x(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    x[d] = f % shape[d];
    f /= shape[d];
  }
  return x;
}

// Every shape with 1..max_dims dims of extents 1..max_extent.
std::vector<Shape> small_shapes(size_t max_dims, int64_t max_extent) {
  std::vector<Shape> out{{}};
  std::vector<Shape> level{{}};
  for (size_t n = 1; n <= max_dims; ++n) {
    std::vector<Shape> next;
    for (const Shape& s : level)
      for (int64_t e = 1; e <= max_extent; ++e) {
        Shape t = s;
        t.push_back(e);
        next.push_back(t);
      }
    out.insert(out.end(), next.begin(), next.end());
    level = next;
  }
  return out;
}

// The fewest boxes found greedily: from each position, the longest box whose row-major order
// is the next run of the range.
size_t greedy_box_count(const Shape& shape, int64_t begin, int64_t end) {
  size_t count = 0;
  for (int64_t p = begin; p < end; ++count) {
    const std::vector<int64_t> x = unravel(p, shape);
    int64_t best = 1, inner = 1;
    for (size_t j = shape.size(); j-- > 0;) {  // boxes [1.., k, full...] starting at x
      const int64_t k = std::min(shape[j] - x[j], (end - p) / inner);
      best = std::max(best, k * inner);
      if (x[j] != 0) break;  // dims further out would need x_j = 0
      inner *= shape[j];
    }
    p += best;
  }
  return count;
}

TEST(FlatRangeBoxes, TileEveryRangeOfSmallShapesInOrder) {
  int64_t cases = 0;
  for (const Shape& shape : small_shapes(4, 3)) {
    const int64_t n = numel_of(shape);
    for (int64_t b = 0; b <= n; ++b)
      for (int64_t e = b; e <= n; ++e, ++cases) {
        SCOPED_TRACE("shape " + shape_str(shape) + " range [" + std::to_string(b) + ", " +
                     std::to_string(e) + ")");
        const std::vector<Box> boxes = flat_range_boxes(shape, b, e);
        int64_t next = b;  // the row-major walk over the boxes must visit b, b + 1, ..., e - 1
        for (const Box& box : boxes) {
          ASSERT_TRUE(box_inside(box, shape)) << box_str(box);
          ASSERT_GT(box.numel(), 0) << box_str(box);
          for (int64_t k = 0; k < box.numel(); ++k) {
            std::vector<int64_t> x = unravel(k, box.shape);
            for (size_t d = 0; d < x.size(); ++d) x[d] += box.offset[d];
            ASSERT_EQ(ravel(x, shape), next++) << box_str(box);
          }
        }
        EXPECT_EQ(next, e);
        if (!shape.empty()) {
          EXPECT_LE(boxes.size(), 2 * shape.size() - 1);
        }
        EXPECT_EQ(boxes.size(), greedy_box_count(shape, b, e));
      }
  }
  EXPECT_GT(cases, 10000);
}

TEST(FlatRangeBoxes, ExamplesAndErrors) {
  // [2, 3, 4], [5, 19): the end of row (0, 1), row (0, 2), then in row 1 of dim 0 the whole
  // row (1, 0) and the start of row (1, 1).
  std::vector<Box> boxes = flat_range_boxes({2, 3, 4}, 5, 19);
  ASSERT_EQ(boxes.size(), 4u);
  EXPECT_EQ(boxes[0], (Box{{0, 1, 1}, {1, 1, 3}}));
  EXPECT_EQ(boxes[1], (Box{{0, 2, 0}, {1, 1, 4}}));
  EXPECT_EQ(boxes[2], (Box{{1, 0, 0}, {1, 1, 4}}));
  EXPECT_EQ(boxes[3], (Box{{1, 1, 0}, {1, 1, 3}}));
  // [2, 3, 4], [5, 24): the head as above, then the whole of row 1 as one block.
  boxes = flat_range_boxes({2, 3, 4}, 5, 24);
  ASSERT_EQ(boxes.size(), 3u);
  EXPECT_EQ(boxes[2], (Box{{1, 0, 0}, {1, 3, 4}}));
  EXPECT_EQ(flat_range_boxes({2, 3, 4}, 0, 24), (std::vector<Box>{Box{{0, 0, 0}, {2, 3, 4}}}));
  EXPECT_TRUE(flat_range_boxes({2, 3}, 4, 4).empty());
  EXPECT_EQ(flat_range_boxes({}, 0, 1), (std::vector<Box>{Box{}}));
  EXPECT_THROW(flat_range_boxes({2, 3}, 4, 7), Error);
  EXPECT_THROW(flat_range_boxes({2, 3}, 3, 2), Error);
  EXPECT_THROW(flat_range_boxes({2, 3}, -1, 2), Error);
}

// A random box inside `view` (possibly the whole view).
Box random_box(const Shape& view, std::mt19937_64& rng) {
  Box b;
  for (int64_t v : view) {
    const int64_t lo = std::uniform_int_distribution<int64_t>(0, v - 1)(rng);
    const int64_t hi = std::uniform_int_distribution<int64_t>(lo + 1, v)(rng);
    b.offset.push_back(lo);
    b.shape.push_back(hi - lo);
  }
  return b;
}

Shape random_shape(size_t dims, std::mt19937_64& rng) {
  Shape s;
  for (size_t d = 0; d < dims; ++d) s.push_back(std::uniform_int_distribution<int64_t>(1, 7)(rng));
  return s;
}

// Element ids (the view's flat index + 1, as `size`-byte little-endian) of the box's elements.
std::vector<unsigned char> box_values(const Box& box, const Shape& view, size_t size) {
  std::vector<unsigned char> out(static_cast<size_t>(box.numel()) * size);
  for (int64_t k = 0; k < box.numel(); ++k) {
    std::vector<int64_t> x = unravel(k, box.shape);
    for (size_t d = 0; d < x.size(); ++d) x[d] += box.offset[d];
    uint64_t id = static_cast<uint64_t>(ravel(x, view)) + 1;
    for (size_t i = 0; i < size; ++i, id >>= 8) out[static_cast<size_t>(k) * size + i] = id & 0xff;
  }
  return out;
}

TEST(CopyBox, MatchesElementByElementOnOddShapes) {
  std::mt19937_64 rng(20240611);
  for (int trial = 0; trial < 3000; ++trial) {
    const size_t dims = 1 + static_cast<size_t>(trial % 4);
    const size_t size = std::vector<size_t>{1, 2, 3, 4, 8}[static_cast<size_t>(trial % 5)];
    const Shape view = random_shape(dims, rng);
    const Box src = random_box(view, rng), dst = random_box(view, rng);
    SCOPED_TRACE("view " + shape_str(view) + " src " + box_str(src) + " dst " + box_str(dst) +
                 " element size " + std::to_string(size));
    const std::vector<unsigned char> from = box_values(src, view, size);
    std::vector<unsigned char> to(static_cast<size_t>(dst.numel()) * size, 0xEE);
    // The reference: the destination's elements that lie in src hold their ids.
    std::vector<unsigned char> expected = to;
    const std::vector<unsigned char> all = box_values(dst, view, size);
    int64_t inside = 0;
    for (int64_t k = 0; k < dst.numel(); ++k) {
      std::vector<int64_t> x = unravel(k, dst.shape);
      bool in = true;
      for (size_t d = 0; d < x.size(); ++d) {
        x[d] += dst.offset[d];
        in = in && x[d] >= src.offset[d] && x[d] < src.offset[d] + src.shape[d];
      }
      if (!in) continue;
      ++inside;
      std::memcpy(&expected[static_cast<size_t>(k) * size], &all[static_cast<size_t>(k) * size],
                  size);
    }
    EXPECT_EQ(copy_box(from.data(), src, to.data(), dst, size), inside);
    ASSERT_EQ(to, expected);
  }
}

TEST(CopyBox, EmptyIntersectionsCopyNothing) {
  const std::vector<unsigned char> from(64, 1);
  std::vector<unsigned char> to(64, 0);
  EXPECT_EQ(copy_box(from.data(), Box{{0, 0}, {2, 4}}, to.data(), Box{{2, 0}, {2, 4}}, 4), 0);
  EXPECT_EQ(
      copy_box(from.data(), Box{{0, 0, 0}, {2, 2, 2}}, to.data(), Box{{0, 2, 0}, {2, 2, 2}}, 2), 0);
  EXPECT_EQ(copy_box(from.data(), Box{{3}, {4}}, to.data(), Box{{0}, {3}}, 1), 0);  // touching
  EXPECT_EQ(to, std::vector<unsigned char>(64, 0));
  EXPECT_EQ(copy_box(from.data(), Box{}, to.data(), Box{}, 8), 1);  // 0-d: one element
  EXPECT_EQ(to[0], 1);
  EXPECT_EQ(to[8], 0);
}

TEST(CommonRefinement, MergesTheSuffixProducts) {
  EXPECT_EQ(common_refinement({4, 6, 5}, {4, 2, 3, 5}), (Shape{4, 2, 3, 5}));
  EXPECT_EQ(common_refinement({4, 2, 3, 5}, {4, 6, 5}), (Shape{4, 2, 3, 5}));
  EXPECT_EQ(common_refinement({6, 10}, {2, 3, 10}), (Shape{2, 3, 10}));
  EXPECT_EQ(common_refinement({6, 10}, {6, 2, 5}), (Shape{6, 2, 5}));
  EXPECT_EQ(common_refinement({12}, {2, 6}), (Shape{2, 6}));
  EXPECT_EQ(common_refinement({2, 6}, {4, 3}), (Shape{2, 2, 3}));  // 3 | 6 | 12
  EXPECT_EQ(common_refinement({1, 6, 1}, {6}), (Shape{6}));        // extent-1 dims vanish
  EXPECT_EQ(common_refinement({}, {1, 1}), (Shape{}));
  EXPECT_EQ(common_refinement({3, 0}, {3, 0}), (Shape{3, 0}));
  EXPECT_FALSE(common_refinement({4, 6}, {6, 4}).has_value());  // 4 does not divide 6
  EXPECT_FALSE(common_refinement({4, 6}, {4, 5}).has_value());  // other numel
  EXPECT_FALSE(common_refinement({3, 0}, {0, 3}).has_value());
}

// Buffer position of each view element (by flat index) held by strided boxes of `fine`.
std::map<int64_t, int64_t> positions(const std::vector<StridedBox>& boxes, const Shape& fine) {
  std::map<int64_t, int64_t> out;
  for (const StridedBox& s : boxes)
    for (int64_t k = 0; k < s.box.numel(); ++k) {
      const std::vector<int64_t> x = unravel(k, s.box.shape);
      std::vector<int64_t> g = x;
      int64_t pos = s.base;
      for (size_t d = 0; d < x.size(); ++d) {
        g[d] += s.box.offset[d];
        pos += x[d] * s.strides[d];
      }
      EXPECT_TRUE(out.emplace(ravel(g, fine), pos).second) << "element held twice";
    }
  return out;
}

TEST(RefineBox, KeepsEveryElementAtItsBufferPosition) {
  std::mt19937_64 rng(7);
  const std::vector<std::pair<Shape, Shape>> views{
      {{4, 6, 5}, {4, 2, 3, 5}}, {{6, 10}, {6, 2, 5}}, {{6, 10}, {3, 2, 10}},  {{12}, {2, 3, 2}},
      {{1, 6, 1}, {6}},          {{2, 6}, {2, 2, 3}},  {{24, 5}, {2, 3, 4, 5}}};
  for (const auto& [view, fine] : views)
    for (int trial = 0; trial < 200; ++trial) {
      const Box box = random_box(view, rng);
      const int64_t n = box.numel();
      const int64_t b = std::uniform_int_distribution<int64_t>(0, n - 1)(rng);
      const int64_t e = std::uniform_int_distribution<int64_t>(b + 1, n)(rng);
      SCOPED_TRACE("view " + shape_str(view) + " fine " + shape_str(fine) + " box " + box_str(box) +
                   " range [" + std::to_string(b) + ", " + std::to_string(e) + ")");
      // The expected map: the range's elements at their positions in the range's buffer.
      std::map<int64_t, int64_t> expected;
      for (int64_t k = b; k < e; ++k) {
        std::vector<int64_t> x = unravel(k, box.shape);
        for (size_t d = 0; d < x.size(); ++d) x[d] += box.offset[d];
        expected[ravel(x, view)] = k - b;  // flat indices agree in every view
      }
      std::vector<StridedBox> refined;
      int64_t pos = 0;
      for (Box sub : flat_range_boxes(box.shape, b, e)) {
        for (size_t d = 0; d < sub.offset.size(); ++d) sub.offset[d] += box.offset[d];
        for (const StridedBox& s : refine_box(row_major(sub, pos), view, fine))
          refined.push_back(s);
        pos += sub.numel();
      }
      ASSERT_EQ(positions(refined, fine), expected);
    }
}

}  // namespace
}  // namespace moe::checkpoint
