// Internal: the `cudnn` backend of attention (attention.h), cuDNN's fused flash SDPA through the
// cuDNN frontend graph API (attention_cudnn.cpp). Plain C++, no cuDNN headers, so
// attention_cpu.cpp and the tests can call it. Present in every CUDA build; without the
// frontend headers (MOE_WITH_CUDNN = 0) it reports itself unavailable and the native kernels run.
//
// Graphs are built once per problem (shape with Sq and Sk, dtype, scale, mask and its offset,
// layout, pass, device) and cached per host thread, as are the cuDNN handles: a handle is not
// safe to share between threads, and the ranks of the Local process-group backend are threads.
// Workspaces come from the caching allocator (Tensor::empty) on the current stream.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "moe/ops/attention.h"
#include "moe/ops/attention_cuda.h"

namespace moe::ops::detail {

enum class CudnnPass { forward, backward };

// Whether this build has the cuDNN path (the frontend headers were found at configure time).
bool cudnn_attention_compiled();

// Whether cuDNN can run `pass` of this problem: the static checks (built in, bf16, head dims
// multiples of 8 up to 256, every tensor 16-byte aligned), then the graph, built and cached on
// the first ask on q's device. When not, `reason` (if given) says why. `tensors` are the
// pass's device tensors, q first (its dtype and device are the problem's).
bool cudnn_attention_can_run(CudnnPass pass, const AttentionShape& shape, bool deterministic,
                             std::initializer_list<const Tensor*> tensors, std::string* reason);

// The backend policy of attention.h for `pass`: true to run it through cuDNN. Backend native,
// or an empty problem: false. Backend automatic: cudnn_attention_can_run, logging (once per
// reason, on stderr) a rejection by cuDNN itself. Backend cudnn: true, or throws moe::Error
// with the reason.
bool use_cudnn_attention(CudnnPass pass, const AttentionShape& shape,
                         const AttentionOptions& options,
                         std::initializer_list<const Tensor*> tensors);

// The passes, after use_cudnn_attention said yes: outputs allocated by the caller, lse
// [B, Hq, Sq] f32 (written by the forward, read by the backward); dq, dk, dv written.
void attention_forward_cudnn(const AttentionShape& shape, const Tensor& q, const Tensor& k,
                             const Tensor& v, Tensor& out, Tensor& lse);
void attention_backward_cudnn(const AttentionShape& shape, bool deterministic,
                              const Tensor& grad_out, const Tensor& q, const Tensor& k,
                              const Tensor& v, const Tensor& out, const Tensor& lse, Tensor& dq,
                              Tensor& dk, Tensor& dv);

// How many graphs the calling thread has built (cached or rejected): lets tests see the cache.
int64_t cudnn_attention_graphs_built();

}  // namespace moe::ops::detail
