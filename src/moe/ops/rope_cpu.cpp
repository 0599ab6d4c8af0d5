// Rotary embeddings: public entry points (argument checks, device dispatch) and the CPU
// reference. Formulas and layouts in rope.h; pair indexing in rope_pairs.h (shared with CUDA).
#include <cmath>
#include <type_traits>
#include <vector>

#include "moe/ops/rope.h"
#include "moe/ops/rope_cuda.h"
#include "moe/ops/rope_pairs.h"

namespace moe::ops {
namespace {

// Checks x / inv_freq / positions and returns the launch description (inverse unset).
detail::RotaryLaunch describe(const Tensor& x, const Tensor& inv_freq, const Tensor& positions,
                              const RotaryArgs& args, const char* op, const char* x_name) {
  check_defined(x, op, x_name);
  MOE_CHECK(x.dim() >= 3, op, ": ", x_name,
            " must be [S, B, heads, D] or [T, heads, D] (at least 3 dims), got ",
            shape_str(x.shape()));
  const DType d = x.dtype();
  MOE_CHECK(d == DType::f64 || d == DType::f32 || d == DType::bf16 || d == DType::f16, op, ": ",
            x_name, " must be f64, f32, bf16 or f16, got ", d);
  check_defined(inv_freq, op, "inv_freq");
  check_dim(inv_freq, 1, op, "inv_freq");
  MOE_CHECK(inv_freq.dtype() == DType::f32 || inv_freq.dtype() == DType::f64, op,
            ": inv_freq must be f32 or f64, got ", inv_freq.dtype());
  check_same_device(inv_freq, x, op);
  detail::RotaryLaunch l;
  l.head_dim = x.size(-1);
  l.heads = x.size(-2);
  l.rotary_dim = 2 * inv_freq.size(0);
  MOE_CHECK(l.rotary_dim > 0 && l.rotary_dim <= l.head_dim, op, ": the rotary dimension ",
            l.rotary_dim, " (2 * inv_freq entries) must be in (0, head_dim = ", l.head_dim, "]");
  l.feature_offset = args.feature_offset;
  MOE_CHECK(l.feature_offset >= 0 && l.feature_offset + l.rotary_dim <= l.head_dim, op,
            ": feature_offset ", l.feature_offset, " + rotary dimension ", l.rotary_dim,
            " must fit in head_dim ", l.head_dim, " (and the offset must not be negative)");
  l.tokens = 1;
  for (int64_t k = 0; k + 2 < x.dim(); ++k) l.tokens *= x.size(k);
  const int64_t seq = x.size(0);
  l.position_divisor = seq > 0 ? l.tokens / seq : 1;  // tokens per index along dim 0
  if (positions.defined()) {
    MOE_CHECK(positions.dtype() == DType::i32 || positions.dtype() == DType::i64, op,
              ": positions must be i32 or i64, got ", positions.dtype());
    check_same_device(positions, x, op);
    const Shape token_shape(x.shape().begin(), x.shape().end() - 2);
    if (positions.shape() == token_shape) {
      l.position_divisor = 1;
    } else {
      MOE_CHECK(positions.shape() == Shape{seq}, op, ": positions must have shape ",
                shape_str(token_shape), " (one per token) or [", seq,
                "] (one per sequence index), got ", shape_str(positions.shape()));
    }
  }
  l.position_offset = args.position_offset;
  l.attention_scale = args.attention_scale;
  l.layout = args.layout;
  MOE_CHECK(args.layout == RotaryLayout::half || args.layout == RotaryLayout::interleaved ||
                args.layout == RotaryLayout::interleaved_to_half,
            op, ": unknown rotary layout ", static_cast<int>(args.layout));
  MOE_CHECK(std::isfinite(args.attention_scale), op, ": attention_scale must be finite");
  return l;
}

template <class T>
using Compute = std::conditional_t<std::is_same_v<T, double>, double, float>;

void rotary_cpu(const Tensor& x, const Tensor& inv_freq, const Tensor& positions,
                const detail::RotaryLaunch& l, Tensor& y) {
  const std::vector<double> freq = inv_freq.to_double_vector();
  std::vector<int64_t> pos;
  if (positions.defined()) {
    const std::vector<double> p = positions.to_double_vector();  // exact below 2^53
    pos.assign(p.begin(), p.end());
  }
  const int64_t half = l.rotary_dim / 2;
  dispatch_float(x.dtype(), "rotary", [&]<class T>() {
    using C = Compute<T>;
    const T* in = x.data<T>();
    T* out = y.data<T>();
    // inv_freq rounded to the compute type first, as the kernels (and HF's fp32 buffer) use it.
    std::vector<C> f(freq.begin(), freq.end());
    std::vector<C> cos_m(static_cast<size_t>(half)), sin_m(static_cast<size_t>(half));
    const C scale = static_cast<C>(l.attention_scale);
    for (int64_t t = 0; t < l.tokens; ++t) {
      const int64_t index = t / l.position_divisor;
      const int64_t p = l.position_offset + (pos.empty() ? index : pos[static_cast<size_t>(index)]);
      for (int64_t i = 0; i < half; ++i) {
        const C angle = static_cast<C>(p) * f[static_cast<size_t>(i)];
        cos_m[static_cast<size_t>(i)] = std::cos(angle) * scale;
        sin_m[static_cast<size_t>(i)] = std::sin(angle) * scale;
      }
      for (int64_t h = 0; h < l.heads; ++h) {
        const int64_t base = (t * l.heads + h) * l.head_dim;
        const T* xr = in + base + l.feature_offset;  // the rotated features, pairs relative
        T* yr = out + base + l.feature_offset;
        for (int64_t i = 0; i < half; ++i) {
          const detail::RotaryPair pr = detail::rotary_pair(l.layout, i, half);
          // The backward reads dy at the forward's output indices and writes dx at its inputs.
          const int64_t ra = l.inverse ? pr.out_a : pr.in_a, rb = l.inverse ? pr.out_b : pr.in_b;
          const int64_t wa = l.inverse ? pr.in_a : pr.out_a, wb = l.inverse ? pr.in_b : pr.out_b;
          C oa, ob;
          detail::rotate_pair(static_cast<C>(xr[ra]), static_cast<C>(xr[rb]),
                              cos_m[static_cast<size_t>(i)], sin_m[static_cast<size_t>(i)],
                              l.inverse, oa, ob);
          yr[wa] = T(oa);
          yr[wb] = T(ob);
        }
        for (int64_t j = 0; j < l.head_dim; ++j)  // pass-through features
          if (j < l.feature_offset || j >= l.feature_offset + l.rotary_dim)
            out[base + j] = in[base + j];
      }
    }
  });
}

Tensor run(const Tensor& x, const Tensor& inv_freq, const Tensor& positions, const RotaryArgs& args,
           bool inverse, const char* op, const char* x_name) {
  detail::RotaryLaunch l = describe(x, inv_freq, positions, args, op, x_name);
  l.inverse = inverse;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return y;
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::rotary_cuda(x, inv_freq, positions, l, y); return y;)
  }
  rotary_cpu(x, inv_freq, positions, l, y);
  return y;
}

}  // namespace

Tensor rotary_forward(const Tensor& x, const Tensor& inv_freq, const Tensor& positions,
                      const RotaryArgs& args) {
  return run(x, inv_freq, positions, args, false, "rotary_forward", "x");
}

Tensor rotary_backward(const Tensor& grad_y, const Tensor& inv_freq, const Tensor& positions,
                       const RotaryArgs& args) {
  return run(grad_y, inv_freq, positions, args, true, "rotary_backward", "grad_y");
}

}  // namespace moe::ops
