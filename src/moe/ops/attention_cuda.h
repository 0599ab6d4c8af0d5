// Internal: the problem description shared by the CPU reference and the CUDA kernels of
// attention (attention.h), and the CUDA launchers (attention_cuda.cu). Plain C++ so
// attention_cpu.cpp can call them after checking the arguments and allocating the outputs.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"
#include "moe/ops/attention.h"

namespace moe::ops::detail {

// Element strides of one [.., .., H, Dh] attention tensor; the last dim is contiguous. Element
// (b, s, h, d) lives at b * batch + s * token + h * head + d, whichever the layout.
struct AttentionStrides {
  int64_t batch = 0;
  int64_t token = 0;
  int64_t head = 0;
};

struct AttentionShape {
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;    // D: q and k
  int64_t v_head_dim = 0;  // Dv: v and out
  double scale = 1.0;
  bool causal = true;
  AttentionLayout layout = AttentionLayout::bshd;
  DropoutArgs dropout;  // p = 0: none (attention.h)

  // Strides of a tensor with `heads` heads of `dim` elements in this layout.
  AttentionStrides strides(int64_t heads, int64_t dim) const {
    if (layout == AttentionLayout::bshd) return {seq * heads * dim, heads * dim, dim};
    return {heads * dim, batch * heads * dim, dim};
  }
  // Query heads per kv head.
  int64_t group() const { return q_heads / kv_heads; }
};

// out [.., Hq, Dv] and lse [B, Hq, S] f32, allocated by the caller. dtypes f32, bf16.
void attention_forward_cuda(const AttentionShape& shape, const Tensor& q, const Tensor& k,
                            const Tensor& v, Tensor& out, Tensor& lse);
// dq, dk, dv allocated by the caller (written, not accumulated).
void attention_backward_cuda(const AttentionShape& shape, const Tensor& grad_out, const Tensor& q,
                             const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             Tensor& dq, Tensor& dk, Tensor& dv);

}  // namespace moe::ops::detail
