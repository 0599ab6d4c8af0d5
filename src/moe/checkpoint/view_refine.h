// Two views of one row-major tensor, made comparable: a sharded checkpoint stores boxes of the
// view its writer used (say the global fc1 [E, 2F, H]) and a reader may cut its pieces from
// another view of the same elements ([E, 2, F, H]). Both are re-read in their common
// refinement, the coarsest shape of which each is a merging of adjacent dims.
//
// A shape V (n dims) is described by its suffix products P_k = V_k * ... * V_{n-1} (P_n = 1):
// merging adjacent dims removes products, splitting one adds some. Two shapes of the same numel
// have a common refinement iff the union U of their suffix products is a chain under
// divisibility, 1 = u_0 < u_1 < ... < u_m = numel with u_{i+1} % u_i == 0; it is then
//   F = [u_m / u_{m-1}, ..., u_1 / u_0].
// [E, 2F, H] and [E, 2, F, H] give [E, 2, F, H]; [4, 6] and [6, 4] have none (6 % 4 != 0).
// Dims of extent 1 vanish from F (a numel-0 tensor has a common view only with itself).
//
// A box of V is, in F, the product over V's dims k of the interval [o_k, o_k + s_k) read in the
// group of F dims that dim k splits into: flat_range_boxes of that group (one box when the
// interval is aligned to the group, a few otherwise). The buffer keeps its layout: F dim j of
// the group of V dim k has the stride (stride of j inside the group) * (stride of k).
#pragma once

#include <optional>
#include <vector>

#include "moe/checkpoint/box_copy.h"
#include "moe/core/tensor.h"

namespace moe::checkpoint {

// The common refinement of two views (equal shapes give themselves), or nullopt if there is
// none or the numels differ.
std::optional<Shape> common_refinement(const Shape& a, const Shape& b);

// `box` (a box of `view` with its buffer layout) as strided boxes of `fine`, a refinement of
// `view` (common_refinement(view, fine) == fine); together they hold exactly the box's
// elements, at the same buffer positions. None for an empty box.
std::vector<StridedBox> refine_box(const StridedBox& box, const Shape& view, const Shape& fine);

}  // namespace moe::checkpoint
