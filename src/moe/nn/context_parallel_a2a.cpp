#include "moe/nn/context_parallel_a2a.h"

#include <vector>

#include "moe/core/error.h"

namespace moe::nn {
namespace {

// x [2c, B, H, d] (this rank's rows, every head) -> [S, B, H / CP, d]: the whole sequence in
// position order, heads [rank H / CP, (rank + 1) H / CP).
Tensor rows_to_heads(const Tensor& x, const ContextParallel& cp) {
  const int n = cp.size();
  const int64_t local_rows = x.size(0), B = x.size(1), H = x.size(2), d = x.size(3);
  const int64_t h = H / n, rows = local_rows * B;
  const size_t width = static_cast<size_t>(h * d) * dtype_size(x.dtype());
  // Block j of the message: these rows' heads of rank j, [2c, B, h, d].
  Tensor send = Tensor::empty({n * local_rows, B, h, d}, x.dtype(), x.device());
  for (int j = 0; j < n; ++j)
    copy_bytes_2d(static_cast<char*>(send.raw()) + static_cast<size_t>(j * rows) * width, width,
                  static_cast<const char*>(x.raw()) + static_cast<size_t>(j) * width,
                  static_cast<size_t>(n) * width, width, static_cast<size_t>(rows), x.device());
  Tensor by_rank = Tensor::empty(send.shape(), x.dtype(), x.device());
  const std::vector<int64_t> counts(static_cast<size_t>(n), local_rows);
  cp.group->all_to_all_v(send, by_rank, counts, counts);
  // Block r of by_rank: rank r's rows (chunks r and 2 CP - 1 - r) of this rank's heads.
  Tensor whole = Tensor::empty(by_rank.shape(), x.dtype(), x.device());
  ranks_to_positions(by_rank, whole, n);
  return whole;
}

// The inverse: y [S, B, h, d] (every position, this rank's heads) -> [2c, B, CP h, d].
Tensor heads_to_rows(const Tensor& y, const ContextParallel& cp) {
  const int n = cp.size();
  const int64_t B = y.size(1), h = y.size(2), d = y.size(3);
  const int64_t local_rows = y.size(0) / n, rows = local_rows * B;
  const size_t width = static_cast<size_t>(h * d) * dtype_size(y.dtype());
  Tensor send = Tensor::empty(y.shape(), y.dtype(), y.device());
  positions_to_ranks(y, send, n);
  Tensor by_heads = Tensor::empty(y.shape(), y.dtype(), y.device());
  const std::vector<int64_t> counts(static_cast<size_t>(n), local_rows);
  cp.group->all_to_all_v(send, by_heads, counts, counts);
  // Block j of by_heads: this rank's rows of rank j's heads.
  Tensor x = Tensor::empty({local_rows, B, n * h, d}, y.dtype(), y.device());
  for (int j = 0; j < n; ++j)
    copy_bytes_2d(static_cast<char*>(x.raw()) + static_cast<size_t>(j) * width,
                  static_cast<size_t>(n) * width,
                  static_cast<const char*>(by_heads.raw()) + static_cast<size_t>(j * rows) * width,
                  width, width, static_cast<size_t>(rows), y.device());
  return x;
}

// The options of the whole-sequence attention of this rank's block of heads: causal from
// position 0, the dropout's global head indices moved to the block.
ops::AttentionOptions head_block_options(const ops::AttentionOptions& options, int64_t heads,
                                         int64_t seq_length, const ContextParallel& cp) {
  ops::AttentionOptions o = options;
  o.causal_offset = 0;
  if (o.dropout.active()) {
    o.dropout.heads_total = o.dropout.global_heads(heads);
    o.dropout.head_offset += cp.rank() * (heads / cp.size());
    o.dropout.query_offset = 0;
    o.dropout.key_offset = 0;
    o.dropout.seq_total = seq_length;
  }
  return o;
}

}  // namespace

void check_a2a_heads(int64_t query_heads, int64_t kv_heads, int cp_size) {
  MOE_CHECK(query_heads % cp_size == 0 && kv_heads % cp_size == 0,
            "--cp-comm-type a2a splits attention heads over the --context-parallel-size ", cp_size,
            " ranks, but a tensor-parallel rank has ", query_heads, " query heads and ", kv_heads,
            " key/value heads (both must divide by it); use --cp-comm-type p2p");
}

ContextParallelAttention a2a_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                               const ops::AttentionOptions& options,
                                               const ContextParallel& cp) {
  check_a2a_heads(q.size(2), k.size(2), cp.size());
  const int64_t S = q.size(0) * cp.size();
  ContextParallelAttention saved;
  saved.q_all = rows_to_heads(q, cp);
  saved.k_all = rows_to_heads(k, cp);
  saved.v_all = rows_to_heads(v, cp);
  ops::AttentionOutput r = ops::attention_forward(saved.q_all, saved.k_all, saved.v_all,
                                                  head_block_options(options, q.size(2), S, cp));
  saved.out_all = std::move(r.out);
  saved.lse_all = std::move(r.lse);
  saved.out = heads_to_rows(saved.out_all, cp);
  return saved;
}

ops::AttentionGrads a2a_attention_backward(const Tensor& d_out, const Tensor& q,
                                           const ContextParallelAttention& saved,
                                           const ops::AttentionOptions& options,
                                           const ContextParallel& cp) {
  const int64_t S = q.size(0) * cp.size();
  const ops::AttentionGrads g = ops::attention_backward(
      rows_to_heads(d_out, cp), saved.q_all, saved.k_all, saved.v_all, saved.out_all, saved.lse_all,
      head_block_options(options, q.size(2), S, cp));
  ops::AttentionGrads grads;
  grads.q = heads_to_rows(g.q, cp);
  grads.k = heads_to_rows(g.k, cp);
  grads.v = heads_to_rows(g.v, cp);
  return grads;
}

}  // namespace moe::nn
