// Scaled-dot-product attention (the core op, after the Q/K/V projections and rotary embedding,
// before the output projection), causal or full, with grouped-query attention: MHA (Hkv = Hq),
// GQA (Hq a multiple of Hkv) and MQA (Hkv = 1). The FlashAttention convention: the forward saves
// only the per-row logsumexp, and the backward recomputes the probabilities from q, k and it, so
// no Sq x Sk matrix is ever part of the API (or, on CUDA, of memory).
//
// Shapes (layout AttentionLayout::bshd, the default):
//   q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv]
//     ->  out [B, Sq, Hq, Dv], lse [B, Hq, Sq]
// bshd is what the fused QKV projection produces from token rows ordered [B*S] and reshaped.
// AttentionLayout::sbhd takes Megatron's order instead: q [Sq, B, Hq, D], k [Sk, B, Hkv, D], ...,
// out [Sq, B, Hq, Dv] (rows ordered [S*B], as under sequence/context parallelism); lse is
// [B, Hq, Sq] in both. The kernels are layout-agnostic (they take batch, sequence and head
// strides), so the two layouts cost the same. D (the q/k head dim) may differ from Dv (the v
// head dim): DeepSeek's MLA uses D = 192, Dv = 128.
//
// Query and key lengths. Self-attention has Sq = Sk. Under context parallelism a rank's query
// chunk attends over keys gathered from the other ranks, so Sq and Sk differ, and the causal
// mask is offset: query row i sits at key position i + causal_offset (AttentionOptions), i.e.
//   row i sees keys j <= min(i + causal_offset, Sk - 1)        (causal; causal_offset >= 0)
// A row whose range is clipped at Sk - 1 sees every key (Sq + causal_offset <= Sk is not
// required); offset >= 0 gives every row at least key 0. Full attention: every row sees all Sk
// keys, for any Sk >= 1 (causal_offset is ignored). Sk = 0 with Sq > 0 is an error (a row would
// have no key). Sq = Sk with causal_offset = 0 is the plain decoder mask j <= i.
//
// Formula. Query head h reads kv head g = h / (Hq / Hkv). With scale = softmax_scale (default
// 1 / sqrt(D); YaRN multiplies it by mscale^2, which the caller passes in):
//   s_ij   = scale * <q_i, k_j>       (j <= min(i + causal_offset, Sk - 1) when causal; all j
//                                      otherwise)
//   lse_i  = log sum_j exp(s_ij)                    (computed as m_i + log sum_j exp(s_ij - m_i))
//   P_ij   = exp(s_ij - lse_i),  out_i = sum_j P_ij v_j
// Backward, given dout (and out, lse from the forward):
//   Delta_i = <dout_i, out_i>,  dP_ij = <dout_i, v_j>,  dS_ij = P_ij (dP_ij - Delta_i)
//   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_i dS_ij q_i,  dv_j = sum_i P_ij dout_i
// and with GQA the dk, dv of a kv head sum over the Hq / Hkv query heads that read it.
// Attention dropout (Megatron's --attention-dropout, AttentionOptions::dropout with p > 0; the
// mask M_ij of ops/dropout.h at the global index
//   n = (((first_sample + b) Hq_total + head_offset + h) S_total + query_offset + i) S_total
//       + key_offset + j,
// c = 1 / (1 - p)): sample, head, query and key are global, so a call on a block of heads
// (tensor parallelism: heads [head_offset, head_offset + Hq) of heads_total) or on query / key
// chunks (context parallelism: positions [query_offset, query_offset + Sq) and [key_offset,
// key_offset + Sk) of seq_total) draws the one-rank model's masks. Defaults (0) make the call the
// whole thing (seq_total 0 means S_total = max(Sq, Sk)). The dropout offsets move the dropout
// index only: the causal mask is set by causal_offset alone (j <= i + causal_offset in local
// indices), so a context-parallel chunk sets both (causal_offset = query_offset - key_offset
// when its keys start at key_offset).
//   out_i = sum_j P_ij M_ij c v_j       (lse is still the undropped softmax's)
//   dv_j = sum_i P_ij M_ij c dout_i,  dS_ij = P_ij (M_ij c dP_ij - Delta_i)
// with Delta_i = <dout_i, out_i> = sum_j P_ij M_ij c dP_ij as before (FlashAttention's dropout).
// p = 0 runs exactly the code without dropout (bitwise).
// Gradient rule: activation gradients are written (dq, dk, dv are new tensors); there are no
// parameters.
//
// dtypes: q, k, v, out, dout share one dtype. CPU: f64 (computed in f64), f32, bf16, f16
// (computed in f32). CUDA: f32 and bf16 (computed in f32), D and Dv up to 256. lse is f64 for f64
// inputs and f32 otherwise. Empty inputs (B = 0 or Sq = 0) give empty outputs (and, with
// Sq = 0, dk = dv = 0). No host synchronisation on CUDA.
//
// CUDA backends (AttentionOptions::backend; the CPU ignores it):
//  - native: this library's FlashAttention-2 kernels (attention_cuda.cu): f32 and bf16, any head
//    dims up to 256, deterministic (no atomics: dq is its own pass).
//  - cudnn: cuDNN's fused flash SDPA through the cuDNN frontend graph API
//    (attention_cudnn.cpp; only in builds that found the frontend headers, MOE_WITH_CUDNN): bf16,
//    D and Dv multiples of 8 up to 256 where the installed cuDNN supports the pair (D = 192,
//    Dv = 128 needs a recent cuDNN), 16-byte aligned tensors. Its lse is the same natural-log
//    logsumexp of the scaled scores, so a forward of one backend and a backward of the other
//    mix. Its backward accumulates dq with fp32 atomics: not bitwise reproducible unless
//    `deterministic` is set. Sq != Sk and the offset causal mask go to cuDNN as they are: its
//    top-left-aligned diagonal band with right bound causal_offset is exactly j <= i + offset
//    (the plain causal mask is right bound 0); a cuDNN that has no kernel for a problem (older
//    versions restrict bands and Sq != Sk) rejects the graph, and the rule below applies.
//    Asked for explicitly, an unsupported problem throws.
//  - automatic (the default): cudnn where it can run the problem (built in, bf16, the dims and
//    `deterministic` supported), native otherwise; a problem cuDNN rejects after passing those
//    checks is logged once (stderr) with cuDNN's reason.
// Dropout: the cuDNN graphs here are built without dropout (cuDNN's own Philox masks could not
// match the CPU's bit for bit), so a call with dropout p > 0 runs the native kernels whatever
// the backend asked for (cudnn included); p = 0 takes the backend as above.
#pragma once

#include <optional>
#include <string>

#include "moe/core/tensor.h"
#include "moe/ops/dropout.h"

namespace moe::ops {

enum class AttentionLayout { bshd, sbhd };

enum class AttentionBackend { automatic, cudnn, native };

const char* attention_backend_name(AttentionBackend backend);
// "automatic", "cudnn" or "native"; throws moe::Error naming the choices otherwise.
AttentionBackend parse_attention_backend(const std::string& name);

struct AttentionOptions {
  // Multiplies <q_i, k_j>; unset means 1 / sqrt(D).
  std::optional<double> softmax_scale;
  // Token i attends to tokens j <= i only (the decoder mask); with causal_offset, query row i
  // sees keys j <= min(i + causal_offset, Sk - 1) (see above).
  bool causal = true;
  // Where query row 0 sits among the keys, for causal attention of a query chunk over a longer
  // key sequence (context parallelism). Must be >= 0; has no effect when not causal.
  int64_t causal_offset = 0;
  AttentionLayout layout = AttentionLayout::bshd;
  // Which CUDA implementation runs (see above).
  AttentionBackend backend = AttentionBackend::automatic;
  // Asks the cudnn backward for bitwise-reproducible gradients (its slower deterministic
  // algorithm, with an O(B Hq Sq Sk) workspace on Hopper). The native kernels always are.
  bool deterministic = false;
  // Dropout on the attention probabilities (see above); p = 0: none. The backward must get the
  // forward's args.
  DropoutArgs dropout;
};

struct AttentionOutput {
  Tensor out;  // [B, Sq, Hq, Dv] (bshd) or [Sq, B, Hq, Dv] (sbhd), q's dtype
  Tensor lse;  // [B, Hq, Sq], f32 (f64 for f64 inputs): saved for the backward
};

AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionOptions& options = {});

struct AttentionGrads {
  Tensor q;  // like q
  Tensor k;  // like k (summed over the query heads of each kv head; 0 for keys no row sees)
  Tensor v;  // like v (likewise)
};

// out and lse are attention_forward's results for the same q, k, v and options.
AttentionGrads attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse,
                                  const AttentionOptions& options = {});

// The scale that `options` gives for q/k head dim `head_dim`.
double attention_scale(const AttentionOptions& options, int64_t head_dim);

// The backend that attention_forward and attention_backward take for these inputs and options:
// native or cudnn (never automatic). For cudnn or automatic it builds (and caches) the cuDNN
// forward and backward graphs, so a cudnn answer means both run through cuDNN; when cuDNN
// cannot, the answer is native and `reason` (if given) says why (an explicit cudnn request then
// throws on use). CPU tensors answer native.
AttentionBackend attention_backend_for(const Tensor& q, const Tensor& k, const Tensor& v,
                                       const AttentionOptions& options = {},
                                       std::string* reason = nullptr);

}  // namespace moe::ops
