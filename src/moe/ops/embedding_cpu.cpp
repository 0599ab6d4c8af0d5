// Embedding lookup: public entry points (argument checks, device dispatch) and the CPU
// reference. Formulas and the out-of-range policy in embedding.h.
#include <cstring>
#include <type_traits>
#include <vector>

#include "moe/ops/embedding.h"
#include "moe/ops/embedding_cuda.h"

namespace moe::ops {
namespace {

struct Shard {
  int64_t start, end, vocab_size;
};

void check_ids(const Tensor& ids, const char* op) {
  check_defined(ids, op, "ids");
  MOE_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, op,
            ": ids must be i32 or i64, got ", ids.dtype());
}

void check_floating(const Tensor& t, const char* op, const char* name) {
  const DType d = t.dtype();
  MOE_CHECK(d == DType::f64 || d == DType::f32 || d == DType::bf16 || d == DType::f16, op, ": ",
            name, " must be f64, f32, bf16 or f16, got ", d);
}

Shard shard_of(const EmbeddingArgs& args, int64_t local_rows, const char* op) {
  MOE_CHECK(args.vocab_start >= 0, op, ": vocab_start must be >= 0, got ", args.vocab_start);
  const Shard s{args.vocab_start, args.vocab_start + local_rows,
                args.vocab_size < 0 ? args.vocab_start + local_rows : args.vocab_size};
  MOE_CHECK(s.end <= s.vocab_size, op, ": the shard [", s.start, ", ", s.end,
            ") does not fit the vocabulary of ", s.vocab_size);
  return s;
}

// y.shape (or grad_y.shape) must be ids.shape + [H].
Shape rows_shape(const Tensor& ids, int64_t hidden) {
  Shape shape = ids.shape();
  shape.push_back(hidden);
  return shape;
}

template <class I>
void check_ids_in_range(const I* ids, int64_t count, int64_t vocab_size, const char* op) {
  for (int64_t t = 0; t < count; ++t) {
    const int64_t id = static_cast<int64_t>(ids[t]);
    MOE_CHECK(id >= 0 && id < vocab_size, op, ": token ", t, " has id ", id,
              ", outside the vocabulary [0, ", vocab_size, ")");
  }
}

void check_ids_cpu(const Tensor& ids, int64_t vocab_size, const char* op) {
  dispatch<DType::i32, DType::i64>(ids.dtype(), op, [&]<class I>() {
    check_ids_in_range(ids.data<I>(), ids.numel(), vocab_size, op);
  });
}

void forward_cpu(const Tensor& ids, const Tensor& weight, const Shard& shard, Tensor& y) {
  const int64_t tokens = ids.numel(), hidden = weight.size(1);
  const size_t row_bytes = static_cast<size_t>(hidden) * dtype_size(weight.dtype());
  const char* w = static_cast<const char*>(weight.raw());
  char* out = static_cast<char*>(y.raw());
  dispatch<DType::i32, DType::i64>(ids.dtype(), "embedding_forward", [&]<class I>() {
    const I* id = ids.data<I>();
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t v = static_cast<int64_t>(id[t]);
      char* dst = out + static_cast<size_t>(t) * row_bytes;
      if (v >= shard.start && v < shard.end)
        std::memcpy(dst, w + static_cast<size_t>(v - shard.start) * row_bytes, row_bytes);
      else
        std::memset(dst, 0, row_bytes);  // another shard's id (all-bits-zero is +0.0)
    }
  });
}

void backward_cpu(const Tensor& grad_y, const Tensor& ids, const Shard& shard, Tensor& grad_weight,
                  bool accumulate) {
  const int64_t tokens = ids.numel(), hidden = grad_weight.size(1);
  if (!accumulate) grad_weight.zero_();
  dispatch_float(grad_y.dtype(), "embedding_backward", [&]<class T>() {
    using G = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* dy = grad_y.data<T>();
    G* dw = grad_weight.data<G>();
    dispatch<DType::i32, DType::i64>(ids.dtype(), "embedding_backward", [&]<class I>() {
      const I* id = ids.data<I>();
      for (int64_t t = 0; t < tokens; ++t) {
        const int64_t v = static_cast<int64_t>(id[t]);
        if (v < shard.start || v >= shard.end) continue;
        G* row = dw + (v - shard.start) * hidden;
        const T* src = dy + t * hidden;
        for (int64_t h = 0; h < hidden; ++h) row[h] += static_cast<G>(src[h]);
      }
    });
  });
}

}  // namespace

Tensor embedding_forward(const Tensor& ids, const Tensor& weight, const EmbeddingArgs& args) {
  const char* op = "embedding_forward";
  check_ids(ids, op);
  check_defined(weight, op, "weight");
  check_dim(weight, 2, op, "weight");
  check_floating(weight, op, "weight");
  check_same_device(weight, ids, op);
  const Shard shard = shard_of(args, weight.size(0), op);
  if (args.invalid_count.defined()) {
    check_shape(args.invalid_count, {1}, op, "invalid_count");
    check_dtype(args.invalid_count, DType::i32, op, "invalid_count");
    check_same_device(args.invalid_count, ids, op);
  }
  Tensor y = Tensor::empty(rows_shape(ids, weight.size(1)), weight.dtype(), weight.device());
  if (ids.is_cuda()) {
    MOE_CUDA_ONLY(detail::embedding_forward_cuda(ids.reshape({-1}), weight, shard.start,
                                                 shard.vocab_size, args.invalid_count, y);
                  return y;)
  }
  check_ids_cpu(ids, shard.vocab_size, op);
  forward_cpu(ids, weight, shard, y);
  return y;
}

void embedding_backward(const Tensor& grad_y, const Tensor& ids, Tensor& grad_weight,
                        bool accumulate, const EmbeddingArgs& args) {
  const char* op = "embedding_backward";
  check_ids(ids, op);
  check_defined(grad_y, op, "grad_y");
  check_floating(grad_y, op, "grad_y");
  check_defined(grad_weight, op, "grad_weight");
  check_dim(grad_weight, 2, op, "grad_weight");
  const DType dt = grad_y.dtype();
  check_dtype(grad_weight, (dt == DType::bf16 || dt == DType::f16) ? DType::f32 : dt, op,
              "grad_weight");
  check_shape(grad_y, rows_shape(ids, grad_weight.size(1)), op, "grad_y");
  check_same_device(grad_y, ids, op);
  check_same_device(grad_weight, ids, op);
  const Shard shard = shard_of(args, grad_weight.size(0), op);
  const int64_t hidden = grad_weight.size(1);
  const Tensor flat_ids = ids.reshape({-1});
  const Tensor dy2 = grad_y.reshape({flat_ids.size(0), hidden});
  if (ids.is_cuda()) {
    MOE_CUDA_ONLY(detail::embedding_backward_cuda(dy2, flat_ids, shard.start, shard.vocab_size,
                                                  grad_weight, accumulate);
                  return;)
  }
  check_ids_cpu(ids, shard.vocab_size, op);
  backward_cpu(dy2, flat_ids, shard, grad_weight, accumulate);
}

void check_token_ids(const Tensor& ids, int64_t vocab_size) {
  const char* op = "check_token_ids";
  check_ids(ids, op);
  check_ids_cpu(ids.is_cuda() ? ids.to(Device::cpu()) : ids, vocab_size, op);
}

}  // namespace moe::ops
