// Reading a rank's box of a moecore tensor from the parts that hold it (box_load.h).
#include "moe/checkpoint/box_load.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "moe/checkpoint/box_copy.h"
#include "moe/checkpoint/convert.h"
#include "moe/checkpoint/view_refine.h"
#include "moe/checkpoint/weight_checks.h"
#include "moe/core/error.h"

namespace moe::checkpoint {

namespace {

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

// The box in the common refinement `fine` of the tensor's global shape and its view.
struct Plan {
  Shape global;
  Shape fine;
  std::vector<StridedBox> targets;  // the target box re-read in `fine` (its buffer's layout)
};

Plan plan_for(const TensorMapping& m, const TensorBox& box, const std::string& where) {
  MOE_CHECK(box.view.size() == box.offset.size() && box.view.size() == box.shape.size() &&
                box_inside(Box{box.offset, box.shape}, box.view),
            "the model's box ", box_str(Box{box.offset, box.shape}), " of tensor ", m.name,
            " does not lie in its view ", shape_str(box.view));
  const std::optional<Shape> fine = common_refinement(m.shape, box.view);
  MOE_CHECK(fine.has_value(), "the model cuts tensor ", m.name, " ", shape_str(m.shape), " of ",
            where, " in a view ", shape_str(box.view), " that does not refine its shape");
  Plan plan{m.shape, *fine, {}};
  plan.targets = refine_box(row_major(Box{box.offset, box.shape}), box.view, *fine);
  return plan;
}

// What one source tensor (a part, or a whole moecore tensor) gives the box: the pairs of its
// pieces and the target's pieces that meet, and the rows [first_row, end_row) of the source
// that hold those elements (none: first_row == end_row).
struct SourceRead {
  std::vector<std::pair<StridedBox, StridedBox>> copies;
  int64_t first_row = std::numeric_limits<int64_t>::max();
  int64_t end_row = 0;
  int64_t row_elements = 1;  // elements per row of the source (its dims after the first)

  bool needed() const { return !copies.empty(); }
};

// `source` is a box of the global shape whose buffer is the source tensor (row-major, rows of
// `row_elements`).
SourceRead read_of(const Plan& plan, const Box& source, int64_t row_elements) {
  SourceRead r;
  r.row_elements = std::max<int64_t>(row_elements, 1);
  if (source.numel() == 0) return r;
  for (const StridedBox& piece : refine_box(row_major(source), plan.global, plan.fine))
    for (const StridedBox& target : plan.targets) {
      const std::optional<Box> common = intersect(piece.box, target.box);
      if (!common) continue;
      r.copies.emplace_back(piece, target);
      // Strides are >= 0: the first and the last common elements are the extreme positions.
      int64_t lo = piece.base, hi = piece.base;
      for (size_t d = 0; d < common->shape.size(); ++d) {
        lo += (common->offset[d] - piece.box.offset[d]) * piece.strides[d];
        hi += (common->offset[d] + common->shape[d] - 1 - piece.box.offset[d]) * piece.strides[d];
      }
      r.first_row = std::min(r.first_row, lo / r.row_elements);
      r.end_row = std::max(r.end_row, hi / r.row_elements + 1);
    }
  return r;
}

// Copies what `rows` (rows [first_row, ...) of the source) gives into `out` (the box's buffer).
void copy_into(const SourceRead& r, const Tensor& rows, int64_t first_row, Tensor& out) {
  MOE_CHECK(rows.dtype() == out.dtype(), "internal: box copy from ", rows.dtype(), " to ",
            out.dtype());
  for (auto [piece, target] : r.copies) {
    piece.base -= first_row * r.row_elements;
    copy_strided(rows.raw(), piece, out.raw(), target, dtype_size(out.dtype()));
  }
}

std::string scale_of(const std::string& name) {
  return name + kScaleSuffix;
}

}  // namespace

Tensor read_hf_box(const TensorMapping& m, const TensorSource& hf, const TensorBox& box,
                   Fp8BlockSize block, DType dequantized_dtype) {
  const Plan plan = plan_for(m, box, hf.description());
  // Part p of expert e as a box of the global shape, and what it gives.
  struct Part {
    int64_t expert;
    size_t part;
    SourceRead read;
  };
  std::vector<Part> parts;
  const size_t lead = m.stacked ? 1 : 0;
  for (size_t e = 0; e < m.hf_names.size(); ++e) {
    int64_t row = 0;
    for (size_t p = 0; p < m.hf_names[e].size(); ++p) {
      const Shape& shape = m.part_shapes[p];
      MOE_CHECK(shape.size() + lead == m.shape.size() && !shape.empty(), "internal: part shape ",
                shape_str(shape), " of ", m.name, " ", shape_str(m.shape));
      Box source{std::vector<int64_t>(m.shape.size(), 0), m.shape};
      if (m.stacked) {
        source.offset[0] = static_cast<int64_t>(e);
        source.shape[0] = 1;
      }
      source.offset[lead] = row;
      source.shape[lead] = shape[0];
      row += shape[0];
      SourceRead read = read_of(plan, source, numel_of(shape) / std::max<int64_t>(shape[0], 1));
      if (read.needed()) parts.push_back({static_cast<int64_t>(e), p, std::move(read)});
    }
  }
  // Check every needed part before reading any.
  FusedDType fused;
  for (const Part& part : parts) check_hf_part(m, hf, part.expert, part.part, block, fused);
  const bool fp8 = fused.dtype && is_fp8(*fused.dtype);
  Tensor out = Tensor::empty(box.shape, fp8 ? dequantized_dtype : fused.dtype.value_or(DType::f32));
  const std::string fused_into = m.identity() ? "" : m.name;
  for (const Part& part : parts) {
    const std::string& name = m.hf_names[static_cast<size_t>(part.expert)][part.part];
    const SourceRead& r = part.read;
    int64_t first = r.first_row;
    Tensor rows;
    if (fp8) {
      // From the block row holding the first needed row: the block grid starts at row 0.
      first -= first % block.rows;
      const int64_t scale_end = (r.end_row + block.rows - 1) / block.rows;
      rows = dequantize_fp8_blocks(hf.load_rows(name, first, r.end_row),
                                   hf.load_rows(scale_of(name), first / block.rows, scale_end),
                                   dequantized_dtype, block, name);
    } else {
      rows = hf.load_rows(name, first, r.end_row);
    }
    check_finite(rows, name, hf.where(name), fused_into, first * r.row_elements);
    copy_into(r, rows, first, out);
  }
  return out;
}

Tensor read_moecore_box(const TensorMapping& m, const TensorSource& src, const TensorBox& box,
                        Fp8BlockSize block, DType dequantized_dtype) {
  const Plan plan = plan_for(m, box, src.description());
  const DType dtype = check_moecore_tensor(m, src, block);
  const bool fp8 = is_fp8(dtype);
  Tensor out = Tensor::empty(box.shape, fp8 ? dequantized_dtype : dtype);
  MOE_CHECK(!m.shape.empty(), "internal: 0-d moecore tensor ", m.name, " read as a box");
  const SourceRead r = read_of(plan, Box{std::vector<int64_t>(m.shape.size(), 0), m.shape},
                               numel_of(m.shape) / std::max<int64_t>(m.shape[0], 1));
  if (!r.needed()) return out;
  int64_t first = r.first_row, end = r.end_row;
  if (fp8 && !m.stacked) {  // the parts of a fused FP8 tensor are rows of it: read it whole
    first = 0;
    end = m.shape[0];
  }
  const Tensor rows = load_moecore_rows(m, src, block, dequantized_dtype, first, end);
  check_finite(rows, m.name, src.where(m.name), "", first * r.row_elements);
  copy_into(r, rows, first, out);
  return out;
}

}  // namespace moe::checkpoint
