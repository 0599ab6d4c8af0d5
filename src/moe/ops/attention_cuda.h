// Internal: the problem description shared by the CPU reference and the CUDA kernels of
// attention (attention.h), and the CUDA launchers (attention_cuda.cu). Plain C++ so
// attention_cpu.cpp can call them after checking the arguments and allocating the outputs.
#pragma once

#include <algorithm>
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
  int64_t q_seq = 0;   // Sq: q, out, dout, lse
  int64_t kv_seq = 0;  // Sk: k, v
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;    // D: q and k
  int64_t v_head_dim = 0;  // Dv: v and out
  double scale = 1.0;
  bool causal = true;
  // Query row i sees keys j <= i + causal_offset (causal only; 0 when not causal). Stored
  // clamped to Sk: any offset >= Sk - 1 already shows every row all keys, and the clamp keeps
  // i + causal_offset inside the kernels' int range.
  int64_t causal_offset = 0;
  AttentionLayout layout = AttentionLayout::bshd;
  DropoutArgs dropout;  // p = 0: none (attention.h)

  // Strides of a tensor of `seq` positions with `heads` heads of `dim` elements in this layout.
  AttentionStrides strides(int64_t seq, int64_t heads, int64_t dim) const {
    if (layout == AttentionLayout::bshd) return {seq * heads * dim, heads * dim, dim};
    return {heads * dim, batch * heads * dim, dim};
  }
  AttentionStrides q_strides() const { return strides(q_seq, q_heads, head_dim); }
  AttentionStrides k_strides() const { return strides(kv_seq, kv_heads, head_dim); }
  AttentionStrides v_strides() const { return strides(kv_seq, kv_heads, v_head_dim); }
  AttentionStrides out_strides() const { return strides(q_seq, q_heads, v_head_dim); }
  // Query heads per kv head.
  int64_t group() const { return q_heads / kv_heads; }
  // The keys query row i sees: [0, visible_keys(i)), i.e. min(i + causal_offset, Sk - 1) + 1
  // when causal, Sk otherwise.
  int64_t visible_keys(int64_t i) const {
    return causal ? std::min(i + causal_offset + 1, kv_seq) : kv_seq;
  }
  // S_total of the dropout index (dropout.h): seq_total, or max(Sq, Sk) when it is 0.
  int64_t dropout_seq_total() const { return dropout.global_seq(std::max(q_seq, kv_seq)); }
};

// out [.., Hq, Dv] and lse [B, Hq, Sq] f32, allocated by the caller. dtypes f32, bf16.
void attention_forward_cuda(const AttentionShape& shape, const Tensor& q, const Tensor& k,
                            const Tensor& v, Tensor& out, Tensor& lse);
// dq, dk, dv allocated by the caller (written, not accumulated).
void attention_backward_cuda(const AttentionShape& shape, const Tensor& grad_out, const Tensor& q,
                             const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             Tensor& dq, Tensor& dk, Tensor& dv);

}  // namespace moe::ops::detail
