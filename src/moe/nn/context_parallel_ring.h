// The p2p (ring) exchange of context-parallel attention (context_parallel.h): the forward and
// backward that context_parallel_attention_forward / _backward run for Exchange::p2p.
#pragma once

#include "moe/nn/context_parallel.h"

namespace moe::nn {

ContextParallelAttention ring_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                const ops::AttentionOptions& options,
                                                const ContextParallel& cp);
ops::AttentionGrads ring_attention_backward(const Tensor& d_out, const Tensor& q,
                                            const ContextParallelAttention& saved,
                                            const ops::AttentionOptions& options,
                                            const ContextParallel& cp);

}  // namespace moe::nn
