#include "moe/nn/context_parallel.h"

#include <vector>

#include "moe/core/error.h"
#include "moe/core/trace_range.h"
#include "moe/nn/context_parallel_a2a.h"
#include "moe/nn/context_parallel_ring.h"
#include "moe/ops/elementwise.h"

namespace moe::nn {
namespace {

constexpr const char* kOp = "context parallelism";

}  // namespace

void ranks_to_positions(const Tensor& by_rank, Tensor& by_position, int cp_size) {
  const int64_t c = by_rank.size(0) / (2 * cp_size);
  for (int r = 0; r < cp_size; ++r) {
    by_position.rows(r * c, c).copy_(by_rank.rows(2 * r * c, c));
    by_position.rows((2 * cp_size - 1 - r) * c, c).copy_(by_rank.rows(2 * r * c + c, c));
  }
}

void positions_to_ranks(const Tensor& by_position, Tensor& by_rank, int cp_size) {
  const int64_t c = by_position.size(0) / (2 * cp_size);
  for (int r = 0; r < cp_size; ++r) {
    by_rank.rows(2 * r * c, c).copy_(by_position.rows(r * c, c));
    by_rank.rows(2 * r * c + c, c).copy_(by_position.rows((2 * cp_size - 1 - r) * c, c));
  }
}

Tensor context_parallel_gather(const Tensor& local, const ContextParallel& cp) {
  if (!cp.active()) return local;
  Tensor by_rank = Tensor::empty(with_dim0(local.shape(), local.size(0) * cp.size()), local.dtype(),
                                 local.device());
  cp.group->all_gather(local, by_rank);
  Tensor whole = Tensor::empty(by_rank.shape(), local.dtype(), local.device());
  ranks_to_positions(by_rank, whole, cp.size());
  return whole;
}

namespace {

// This rank's chunks of the sum over the CP ranks of a whole-sequence tensor.
Tensor reduce_scatter_sequence(const Tensor& whole, const ContextParallel& cp) {
  const int64_t c = whole.size(0) / (2 * cp.size());
  Tensor by_rank = Tensor::empty(whole.shape(), whole.dtype(), whole.device());
  positions_to_ranks(whole, by_rank, cp.size());
  Tensor mine = Tensor::empty(with_dim0(whole.shape(), 2 * c), whole.dtype(), whole.device());
  cp.group->reduce_scatter(by_rank, mine, dist::ReduceOp::sum);
  return mine;
}

// The options of query chunk `a` (global chunk index) of a sequence of S: keys [0, (a + 1) c),
// the causal mask offset to the chunk's first position, and the dropout's global indices.
ops::AttentionOptions chunk_options(const ops::AttentionOptions& options, int64_t a, int64_t c,
                                    int64_t seq_length) {
  ops::AttentionOptions o = options;
  o.causal_offset = a * c;
  if (o.dropout.active()) {
    o.dropout.query_offset = a * c;
    o.dropout.key_offset = 0;
    o.dropout.seq_total = seq_length;
  }
  return o;
}

}  // namespace

int64_t ContextParallel::chunk(int64_t seq_length) const {
  const int64_t n = 2 * static_cast<int64_t>(size());
  MOE_CHECK(seq_length % n == 0, "the sequence length ", seq_length,
            " is not divisible by 2 x --context-parallel-size = ", n,
            " (each CP rank holds two chunks of it)");
  return seq_length / n;
}

std::array<int64_t, 2> ContextParallel::chunk_starts(int64_t seq_length) const {
  const int64_t c = chunk(seq_length);
  return {rank() * c, (2 * static_cast<int64_t>(size()) - 1 - rank()) * c};
}

Tensor context_parallel_rows(const Tensor& whole, const ContextParallel& cp) {
  if (!cp.active()) return whole;
  MOE_CHECK(whole.dim() >= 1, kOp, ": rows of a 0-d tensor");
  const int64_t S = whole.size(0), c = cp.chunk(S);
  const std::array<int64_t, 2> starts = cp.chunk_starts(S);
  Tensor mine = Tensor::empty(with_dim0(whole.shape(), 2 * c), whole.dtype(), whole.device());
  mine.rows(0, c).copy_(whole.rows(starts[0], c));
  mine.rows(c, c).copy_(whole.rows(starts[1], c));
  return mine;
}

Tensor context_parallel_positions(int64_t seq_length, int64_t batch, const ContextParallel& cp,
                                  Device device) {
  if (!cp.active()) return Tensor();
  const int64_t c = cp.chunk(seq_length);
  const std::array<int64_t, 2> starts = cp.chunk_starts(seq_length);
  std::vector<int64_t> positions(static_cast<size_t>(2 * c * batch));
  for (int64_t i = 0; i < 2 * c; ++i)
    for (int64_t b = 0; b < batch; ++b)
      positions[static_cast<size_t>(i * batch + b)] = (i < c ? starts[0] + i : starts[1] + i - c);
  return Tensor::from_vector(positions, {2 * c, batch}, device);
}

Tensor ContextParallelPositions::get(int64_t local_rows, int64_t batch, const ContextParallel& cp,
                                     Device device) {
  if (!cp.active()) return Tensor();
  if (!positions_.defined() || positions_.size(0) != local_rows || positions_.size(1) != batch ||
      positions_.device() != device)
    positions_ = context_parallel_positions(local_rows * cp.size(), batch, cp, device);
  return positions_;
}

namespace {

// Exchange::all_gather (context_parallel.h).
ContextParallelAttention gathered_attention_forward(const Tensor& q, const Tensor& k,
                                                    const Tensor& v,
                                                    const ops::AttentionOptions& options,
                                                    const ContextParallel& cp) {
  const int64_t c = q.size(0) / 2, S = 2 * c * cp.size();
  const std::array<int64_t, 2> starts = cp.chunk_starts(S);
  ContextParallelAttention saved;
  saved.k_all = context_parallel_gather(k, cp);
  saved.v_all = context_parallel_gather(v, cp);
  Shape out_shape = q.shape();
  out_shape[0] = 2 * c;
  out_shape[3] = v.size(3);
  saved.out = Tensor::empty(out_shape, q.dtype(), q.device());
  for (int i = 0; i < 2; ++i) {
    const int64_t a = starts[static_cast<size_t>(i)] / c, keys = (a + 1) * c;
    ops::AttentionOutput r =
        ops::attention_forward(q.rows(i * c, c), saved.k_all.rows(0, keys),
                               saved.v_all.rows(0, keys), chunk_options(options, a, c, S));
    Tensor slot = saved.out.rows(i * c, c);
    slot.copy_(r.out);
    saved.lse[static_cast<size_t>(i)] = std::move(r.lse);
  }
  return saved;
}

ops::AttentionGrads gathered_attention_backward(const Tensor& d_out, const Tensor& q,
                                                const ContextParallelAttention& saved,
                                                const ops::AttentionOptions& options,
                                                const ContextParallel& cp) {
  const int64_t c = q.size(0) / 2, S = 2 * c * cp.size();
  const std::array<int64_t, 2> starts = cp.chunk_starts(S);
  // The keys' and values' gradients of the whole sequence, summed in f32 (f64 for f64) over the
  // two query chunks, then over the ranks.
  const DType acc = saved.k_all.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor dk_all = Tensor::zeros(saved.k_all.shape(), acc, q.device());
  Tensor dv_all = Tensor::zeros(saved.v_all.shape(), acc, q.device());
  ops::AttentionGrads grads;
  grads.q = Tensor::empty(q.shape(), q.dtype(), q.device());
  for (int i = 0; i < 2; ++i) {
    const int64_t a = starts[static_cast<size_t>(i)] / c, keys = (a + 1) * c;
    const Tensor out_i = saved.out.rows(i * c, c);
    ops::AttentionGrads g =
        ops::attention_backward(d_out.rows(i * c, c), q.rows(i * c, c), saved.k_all.rows(0, keys),
                                saved.v_all.rows(0, keys), out_i, saved.lse[static_cast<size_t>(i)],
                                chunk_options(options, a, c, S));
    Tensor dq_slot = grads.q.rows(i * c, c);
    dq_slot.copy_(g.q);
    Tensor dk_slot = dk_all.rows(0, keys), dv_slot = dv_all.rows(0, keys);
    ops::add_(dk_slot, g.k.dtype() == acc ? g.k : g.k.to(acc));
    ops::add_(dv_slot, g.v.dtype() == acc ? g.v : g.v.to(acc));
  }
  grads.k = reduce_scatter_sequence(dk_all, cp);
  grads.v = reduce_scatter_sequence(dv_all, cp);
  if (grads.k.dtype() != q.dtype()) grads.k = grads.k.to(q.dtype());
  if (grads.v.dtype() != q.dtype()) grads.v = grads.v.to(q.dtype());
  return grads;
}

}  // namespace

ContextParallelAttention context_parallel_attention_forward(const Tensor& q, const Tensor& k,
                                                            const Tensor& v,
                                                            const ops::AttentionOptions& options,
                                                            const ContextParallel& cp) {
  MOE_CHECK(options.layout == ops::AttentionLayout::sbhd && options.causal, kOp,
            ": attention must be causal and in the sbhd layout");
  MOE_CHECK(q.size(0) % 2 == 0 && k.size(0) == q.size(0) && v.size(0) == q.size(0), kOp,
            ": q, k, v must hold this rank's two chunks (", q.size(0), ", ", k.size(0), ", ",
            v.size(0), " rows)");
  switch (cp.exchange) {
    case ContextParallel::Exchange::p2p:
      return ring_attention_forward(q, k, v, options, cp);
    case ContextParallel::Exchange::a2a:
      return a2a_attention_forward(q, k, v, options, cp);
    case ContextParallel::Exchange::all_gather:
      break;
  }
  return gathered_attention_forward(q, k, v, options, cp);
}

ops::AttentionGrads context_parallel_attention_backward(const Tensor& d_out, const Tensor& q,
                                                        const ContextParallelAttention& saved,
                                                        const ops::AttentionOptions& options,
                                                        const ContextParallel& cp) {
  switch (cp.exchange) {
    case ContextParallel::Exchange::p2p:
      return ring_attention_backward(d_out, q, saved, options, cp);
    case ContextParallel::Exchange::a2a:
      return a2a_attention_backward(d_out, q, saved, options, cp);
    case ContextParallel::Exchange::all_gather:
      break;
  }
  return gathered_attention_backward(d_out, q, saved, options, cp);
}

ops::AttentionOutput sequence_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                const ops::AttentionOptions& options,
                                                const ContextParallel& cp,
                                                ContextParallelAttention& saved) {
  const TraceRange range("attention");
  if (!cp.active()) return ops::attention_forward(q, k, v, options);
  saved = context_parallel_attention_forward(q, k, v, options, cp);
  ops::AttentionOutput result;
  result.out = saved.out;
  return result;
}

ops::AttentionGrads sequence_attention_backward(const Tensor& d_out, const Tensor& q,
                                                const Tensor& k, const Tensor& v, const Tensor& out,
                                                const Tensor& lse,
                                                const ContextParallelAttention& saved,
                                                const ops::AttentionOptions& options,
                                                const ContextParallel& cp) {
  const TraceRange range("attention.bwd");
  if (!cp.active()) return ops::attention_backward(d_out, q, k, v, out, lse, options);
  return context_parallel_attention_backward(d_out, q, saved, options, cp);
}

}  // namespace moe::nn
