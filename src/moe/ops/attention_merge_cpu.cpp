// Merging partial attention: the public entry point (argument checks, device dispatch) and the
// CPU reference, one block row at a time through the rule the CUDA kernel shares
// (attention_merge_rule.h), computed in f64 for f64 out and in f32 otherwise.
#include <type_traits>

#include "moe/ops/attention_merge.h"
#include "moe/ops/attention_merge_cuda.h"
#include "moe/ops/attention_merge_rule.h"

namespace moe::ops {
namespace {

using detail::MergeShape;

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

const char* layout_name(AttentionLayout layout) {
  return layout == AttentionLayout::bshd ? "bshd" : "sbhd";
}

const char* layout_dims(AttentionLayout layout) {
  return layout == AttentionLayout::bshd ? "[B, S, Hq, Dv]" : "[S, B, Hq, Dv]";
}

// Checks the four tensors against each other and returns the rows' geometry.
MergeShape check_merge(const Tensor& out_acc, const Tensor& lse_acc, const Tensor& out_b,
                       const Tensor& lse_b, AttentionLayout layout, int64_t row_begin) {
  const char* op = "attention_merge_";
  check_defined(out_acc, op, "out_acc");
  check_defined(lse_acc, op, "lse_acc");
  check_defined(out_b, op, "out_b");
  check_defined(lse_b, op, "lse_b");
  MOE_CHECK(out_acc.dim() == 4, op, ": out_acc must be ", layout_dims(layout), " (layout ",
            layout_name(layout), "), got ", shape_str(out_acc.shape()));
  MOE_CHECK(out_b.dim() == 4, op, ": out_b must be ", layout_dims(layout), " (layout ",
            layout_name(layout), "), got ", shape_str(out_b.shape()));
  const DType dt = out_acc.dtype();
  MOE_CHECK(dt == DType::f64 || dt == DType::f32 || dt == DType::bf16 || dt == DType::f16, op,
            ": out_acc must be f64, f32, bf16 or f16, got ", dt);
  MOE_CHECK(out_b.dtype() == dt, op, ": out_b must have out_acc's dtype ", dt, ", got ",
            out_b.dtype());
  const DType lse_dt = dt == DType::f64 ? DType::f64 : DType::f32;
  MOE_CHECK(lse_acc.dtype() == lse_dt, op, ": lse_acc must be ", lse_dt, " for ", dt, " out, got ",
            lse_acc.dtype());
  MOE_CHECK(lse_b.dtype() == lse_dt, op, ": lse_b must be ", lse_dt, " for ", dt, " out, got ",
            lse_b.dtype());
  check_same_device(out_acc, lse_acc, op);
  check_same_device(out_acc, out_b, op);
  check_same_device(out_acc, lse_b, op);

  const bool bshd = layout == AttentionLayout::bshd;
  MergeShape s;
  s.bshd = bshd;
  s.batch = out_acc.size(bshd ? 0 : 1);
  s.acc_seq = out_acc.size(bshd ? 1 : 0);
  s.heads = out_acc.size(2);
  s.v_head_dim = out_acc.size(3);
  s.block_seq = out_b.size(bshd ? 1 : 0);
  s.row_begin = row_begin;
  const int64_t block_batch = out_b.size(bshd ? 0 : 1);
  MOE_CHECK(block_batch == s.batch && out_b.size(2) == s.heads && out_b.size(3) == s.v_head_dim, op,
            ": out_b ", shape_str(out_b.shape()), " must match out_acc ",
            shape_str(out_acc.shape()), " in B, Hq and Dv (layout ", layout_name(layout), " ",
            layout_dims(layout), ")");
  MOE_CHECK(lse_acc.shape() == (Shape{s.batch, s.heads, s.acc_seq}), op, ": lse_acc must be ",
            "[B, Hq, Sq] = ", shape_str({s.batch, s.heads, s.acc_seq}), " for out_acc ",
            shape_str(out_acc.shape()), " in layout ", layout_name(layout), ", got ",
            shape_str(lse_acc.shape()));
  MOE_CHECK(lse_b.shape() == (Shape{s.batch, s.heads, s.block_seq}), op, ": lse_b must be ",
            "[B, Hq, n] = ", shape_str({s.batch, s.heads, s.block_seq}), " for out_b ",
            shape_str(out_b.shape()), " in layout ", layout_name(layout), ", got ",
            shape_str(lse_b.shape()));
  MOE_CHECK(s.block_seq <= s.acc_seq, op, ": out_b ", shape_str(out_b.shape()), " has ",
            s.block_seq, " rows, more than out_acc's Sq = ", s.acc_seq, " (layout ",
            layout_name(layout), " ", layout_dims(layout), ")");
  MOE_CHECK(row_begin >= 0 && row_begin <= s.acc_seq - s.block_seq, op, ": row_begin ", row_begin,
            " with out_b's ", s.block_seq, " rows must lie within out_acc's Sq = ", s.acc_seq,
            " rows (0 <= row_begin <= ", s.acc_seq - s.block_seq, ")");
  if (out_acc.is_cuda())
    MOE_CHECK(dt == DType::f32 || dt == DType::bf16, op, ": CUDA supports f32 and bf16 out, got ",
              dt);
  return s;
}

void attention_merge_cpu(Tensor& out_acc, Tensor& lse_acc, const Tensor& out_b, const Tensor& lse_b,
                         const MergeShape& s) {
  dispatch_float(out_acc.dtype(), "attention_merge_", [&]<class T>() {
    using A = Acc<T>;
    T* acc = out_acc.data<T>();
    const T* blk = out_b.data<T>();
    A* lse_a = lse_acc.data<A>();
    const A* lse_blk = lse_b.data<A>();
    const int64_t dv = s.v_head_dim;
    for (int64_t r = 0; r < s.rows(); ++r) {
      const detail::MergeRow row = detail::merge_row(s, r);
      const detail::MergeWeights<A> w =
          detail::merge_weights(lse_a[row.lse_acc], lse_blk[row.lse_b]);
      T* o = acc + row.acc_row * dv;
      const T* ob = blk + r * dv;
      for (int64_t d = 0; d < dv; ++d)
        o[d] = T(detail::merge_value(w, static_cast<A>(o[d]), static_cast<A>(ob[d])));
      lse_a[row.lse_acc] = w.lse;
    }
  });
}

}  // namespace

void attention_merge_(Tensor& out_acc, Tensor& lse_acc, const Tensor& out_b, const Tensor& lse_b,
                      AttentionLayout layout, int64_t row_begin) {
  const MergeShape shape = check_merge(out_acc, lse_acc, out_b, lse_b, layout, row_begin);
  if (out_acc.is_cuda()) {
    MOE_CUDA_ONLY(detail::attention_merge_cuda(out_acc, lse_acc, out_b, lse_b, shape); return;)
  }
  attention_merge_cpu(out_acc, lse_acc, out_b, lse_b, shape);
}

}  // namespace moe::ops
