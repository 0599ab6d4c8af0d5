// Internal: CUDA launchers of the MLA key/value expansion (rope_mla_cuda.cu), plain C++ so
// rope_mla_cpu.cpp can call them after checking the arguments. Tensors are viewed as
// kv [tokens, heads, dn + dv], k_pe [tokens, dr], k [tokens, heads, dn + dr], v [tokens, heads,
// dv].
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::ops::detail {

struct MlaKvLaunch {
  int64_t tokens = 0, heads = 0, nope_dim = 0, rope_dim = 0, v_dim = 0;
};

void mla_expand_kv_forward_cuda(const Tensor& kv, const Tensor& k_pe, const MlaKvLaunch& l,
                                Tensor& k, Tensor& v);
void mla_expand_kv_backward_cuda(const Tensor& grad_k, const Tensor& grad_v, const MlaKvLaunch& l,
                                 Tensor& grad_kv, Tensor& grad_k_pe);

}  // namespace moe::ops::detail
