// Dropout: public entry points (checks, device dispatch) and the CPU reference, the formula of
// dropout.h element by element (the CUDA kernels compute the same bits: dropout_cuda.cu).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "moe/ops/dropout.h"
#include "moe/ops/dropout_cuda.h"

namespace moe::ops {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

void check_args(const DropoutArgs& args, const char* op) {
  check_dropout_probability(args.p, op);
  MOE_CHECK(args.first_sample >= 0, op, ": dropout first_sample must be >= 0, got ",
            args.first_sample);
}

void check_input(const Tensor& x, const char* op) {
  check_defined(x, op, "x");
  check_dim(x, 3, op, "x");
  const DType d = x.dtype();
  MOE_CHECK(d == DType::f64 || d == DType::f32 || d == DType::bf16 || d == DType::f16, op,
            ": x must be one of f64, f32, bf16, f16, got ", d);
}

// 1 / (1 - p) as the kernels use it (0 when everything is dropped).
double keep_scale(double p) {
  return p >= 1.0 ? 0.0 : 1.0 / (1.0 - p);
}

// The global index of element (s, b, f) of an [S, B, F] tensor (dropout.h).
uint64_t global_index(const DropoutArgs& args, int64_t S, int64_t F, int64_t s, int64_t b,
                      int64_t f) {
  return dropout_token_index(args.first_sample, args.seq_offset,
                             static_cast<uint64_t>(args.global_seq(S)), static_cast<uint64_t>(F), b,
                             s, f);
}

// Checks a block [offset, offset + local) of a global extent `total` (the field `total_field`
// resolved: 0 means local): the fields are named `offset_name` and `total_name`.
void check_block(int64_t offset, int64_t local, int64_t total, int64_t total_field,
                 const char* offset_name, const char* total_name, const char* op) {
  MOE_CHECK(total_field >= 0, op, ": dropout ", total_name,
            " must be >= 0 (0: the tensor's own size), got ", total_field);
  MOE_CHECK(offset >= 0, op, ": dropout ", offset_name, " must be >= 0, got ", offset);
  MOE_CHECK(offset <= total - local, op, ": dropout ", offset_name, " ", offset,
            " + the local size ", local, " exceeds ", total_name, " ", total,
            total_field == 0 ? " (0 given: the local size)" : "");
}

void dropout_cpu(const Tensor& x, Tensor& y, const DropoutArgs& args) {
  const int64_t S = x.size(0), B = x.size(1), F = x.size(2);
  const float p = static_cast<float>(args.p);
  dispatch_float(x.dtype(), "dropout", [&]<class T>() {
    using A = Acc<T>;
    const A scale = static_cast<A>(keep_scale(args.p));
    const T* in = x.data<T>();
    T* out = y.data<T>();
    for (int64_t s = 0; s < S; ++s)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t f = 0; f < F; ++f) {
          const int64_t e = (s * B + b) * F + f;
          const bool keep = dropout_keep(args.key, global_index(args, S, F, s, b, f), p);
          out[e] = keep ? T(static_cast<A>(in[e]) * scale) : T(A(0));
        }
  });
}

}  // namespace

void check_dropout_probability(double p, const char* what) {
  MOE_CHECK(std::isfinite(p) && p >= 0.0 && p <= 1.0, what,
            ": the dropout probability must be in [0, 1], got ", p);
}

void check_token_dropout(const DropoutArgs& args, int64_t seq, const char* op) {
  check_args(args, op);
  check_block(args.seq_offset, seq, args.global_seq(seq), args.seq_total, "seq_offset", "seq_total",
              op);
  MOE_CHECK(args.head_offset == 0 && args.heads_total == 0 && args.query_offset == 0 &&
                args.key_offset == 0,
            op, ": head_offset, heads_total, query_offset and key_offset are for attention ",
            "probabilities, a token tensor's dropout needs them 0; got ", args.head_offset, ", ",
            args.heads_total, ", ", args.query_offset, ", ", args.key_offset);
}

void check_probs_dropout(const DropoutArgs& args, int64_t heads, int64_t query_seq, int64_t key_seq,
                         const char* op) {
  check_args(args, op);
  check_block(args.head_offset, heads, args.global_heads(heads), args.heads_total, "head_offset",
              "heads_total", op);
  const int64_t seq_total = args.global_seq(std::max(query_seq, key_seq));
  check_block(args.query_offset, query_seq, seq_total, args.seq_total, "query_offset", "seq_total",
              op);
  check_block(args.key_offset, key_seq, seq_total, args.seq_total, "key_offset", "seq_total", op);
  MOE_CHECK(args.seq_offset == 0, op,
            ": seq_offset is for token tensors; attention probabilities take query_offset and ",
            "key_offset, got seq_offset ", args.seq_offset);
}

Tensor dropout(const Tensor& x, const DropoutArgs& args) {
  const char* op = "dropout";
  check_args(args, op);
  if (!args.active()) return x;  // the identity: not even a check of x
  check_input(x, op);
  check_token_dropout(args, x.size(0), op);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return y;
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::dropout_cuda(x, y, args, keep_scale(args.p)); return y;)
  }
  dropout_cpu(x, y, args);
  return y;
}

void dropout_(Tensor& x, const DropoutArgs& args) {
  const char* op = "dropout_";
  check_args(args, op);
  if (!args.active()) return;
  check_input(x, op);
  check_token_dropout(args, x.size(0), op);
  if (x.numel() == 0) return;
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::dropout_cuda(x, x, args, keep_scale(args.p)); return;)
  }
  dropout_cpu(x, x, args);
}

Tensor dropout_mask(const Shape& shape, const DropoutArgs& args, Device device) {
  const char* op = "dropout_mask";
  check_args(args, op);
  MOE_CHECK(shape.size() == 3, op, ": the shape must be [S, B, F], got ", shape_str(shape));
  check_token_dropout(args, shape[0], op);
  Tensor mask = Tensor::empty(shape, DType::u8, device);
  if (mask.numel() == 0) return mask;
  if (device.is_cuda()) {
    MOE_CUDA_ONLY(detail::dropout_mask_cuda(mask, args); return mask;)
  }
  const int64_t S = shape[0], B = shape[1], F = shape[2];
  const float p = static_cast<float>(args.p);
  uint8_t* m = mask.data<uint8_t>();
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t f = 0; f < F; ++f)
        m[(s * B + b) * F + f] = dropout_keep(args.key, global_index(args, S, F, s, b, f), p);
  return mask;
}

}  // namespace moe::ops
