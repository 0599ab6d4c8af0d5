#include "moe/nn/context_parallel_ring.h"

#include <vector>

#include "moe/core/error.h"
#include "moe/ops/attention_merge.h"
#include "moe/ops/elementwise.h"

namespace moe::nn {
namespace {

// How query chunk `a` sees key chunk `b` (global chunk indices): causal attention reads earlier
// chunks wholly, its own causally, later ones not at all.
enum class Visibility { none, causal, full };
Visibility visibility(int64_t a, int64_t b) {
  return b < a ? Visibility::full : b == a ? Visibility::causal : Visibility::none;
}

// The global chunk indices a rank holds: {r, 2 CP - 1 - r}.
std::array<int64_t, 2> chunks_of(int rank, int cp_size) {
  return {rank, 2 * static_cast<int64_t>(cp_size) - 1 - rank};
}

// The options of the block (query chunk a, key chunk b): causal or full, the dropout's global
// query and key positions.
ops::AttentionOptions block_options(const ops::AttentionOptions& options, int64_t a, int64_t b,
                                    int64_t c, int64_t seq_length) {
  ops::AttentionOptions o = options;
  o.causal = visibility(a, b) == Visibility::causal;
  o.causal_offset = 0;
  if (o.dropout.active()) {
    o.dropout.query_offset = a * c;
    o.dropout.key_offset = b * c;
    o.dropout.seq_total = seq_length;
  }
  return o;
}

// Sends `send` to the next rank of the ring and receives the previous rank's into `recv`
// (preallocated like them), asynchronously.
std::unique_ptr<dist::Work> pass_on(const std::vector<Tensor>& send, std::vector<Tensor>& recv,
                                    const ContextParallel& cp) {
  const int next = (cp.rank() + 1) % cp.size(), prev = (cp.rank() + cp.size() - 1) % cp.size();
  std::vector<dist::P2POp> ops;
  for (const Tensor& t : send) ops.push_back({dist::P2POp::Kind::send, t, next});
  for (Tensor& t : recv) ops.push_back({dist::P2POp::Kind::recv, t, prev});
  return cp.group->batch_p2p_async(ops);
}

std::vector<Tensor> like(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(Tensor::empty(t.shape(), t.dtype(), t.device()));
  return out;
}

}  // namespace

ContextParallelAttention ring_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                const ops::AttentionOptions& options,
                                                const ContextParallel& cp) {
  const int P = cp.size(), r = cp.rank();
  const int64_t c = q.size(0) / 2, S = 2 * c * P;
  const std::array<int64_t, 2> mine = chunks_of(r, P);
  // The partial result of each query chunk so far: out [c, B, Hq, Dv], lse [B, Hq, c].
  std::array<Tensor, 2> out, lse;
  std::vector<Tensor> held{k, v};  // the keys and values of rank r - i in step i
  for (int i = 0; i < P; ++i) {
    std::vector<Tensor> next;
    std::unique_ptr<dist::Work> exchange;
    if (i + 1 < P) {  // the next step's keys and values travel while this step computes
      next = like(held);
      exchange = pass_on(held, next, cp);
    }
    const std::array<int64_t, 2> theirs = chunks_of((r - i + P) % P, P);
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 2; ++j) {
        const int64_t a = mine[static_cast<size_t>(h)], b = theirs[static_cast<size_t>(j)];
        if (visibility(a, b) == Visibility::none) continue;
        ops::AttentionOutput block =
            ops::attention_forward(q.rows(h * c, c), held[0].rows(j * c, c), held[1].rows(j * c, c),
                                   block_options(options, a, b, c, S));
        if (!out[static_cast<size_t>(h)].defined()) {
          out[static_cast<size_t>(h)] = std::move(block.out);
          lse[static_cast<size_t>(h)] = std::move(block.lse);
        } else {
          ops::attention_merge_(out[static_cast<size_t>(h)], lse[static_cast<size_t>(h)], block.out,
                                block.lse, options.layout);
        }
      }
    if (exchange) {
      exchange->wait();
      held = std::move(next);
    }
  }
  ContextParallelAttention saved;
  Shape shape = q.shape();
  shape[3] = v.size(3);
  saved.out = Tensor::empty(shape, q.dtype(), q.device());
  for (int h = 0; h < 2; ++h) {
    Tensor rows = saved.out.rows(h * c, c);
    rows.copy_(out[static_cast<size_t>(h)]);
  }
  saved.lse = lse;
  saved.k = k;
  saved.v = v;
  return saved;
}

ops::AttentionGrads ring_attention_backward(const Tensor& d_out, const Tensor& q,
                                            const ContextParallelAttention& saved,
                                            const ops::AttentionOptions& options,
                                            const ContextParallel& cp) {
  const int P = cp.size(), r = cp.rank();
  const int64_t c = q.size(0) / 2, S = 2 * c * P;
  const std::array<int64_t, 2> mine = chunks_of(r, P);
  const DType acc = q.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor dq = Tensor::zeros(q.shape(), acc, q.device());
  const auto add = [&](Tensor& into, const Tensor& g) {
    ops::add_(into, g.dtype() == acc ? g : g.to(acc));
  };
  // Two exchanges overlap each step's block gradients: the keys and values of the next step
  // travel ahead (as in the forward), and the gradients accumulated so far for the keys and
  // values held now arrive from the previous rank, one step behind them (the previous rank sent
  // them at the end of its step i - 1). The blocks are computed first and added to the arriving
  // sums in the order of the unoverlapped ring, so the sums do not depend on the overlap.
  std::vector<Tensor> held{saved.k, saved.v};  // the keys and values of rank r - i in step i
  std::vector<Tensor> sums{Tensor::zeros(saved.k.shape(), acc, q.device()),
                           Tensor::zeros(saved.v.shape(), acc, q.device())};
  std::vector<Tensor> sent;  // kept alive until the exchange sending them completes
  std::unique_ptr<dist::Work> sums_arriving;
  for (int i = 0; i < P; ++i) {
    std::vector<Tensor> next;
    std::unique_ptr<dist::Work> exchange;
    if (i + 1 < P) {
      next = like(held);
      exchange = pass_on(held, next, cp);
    }
    const std::array<int64_t, 2> theirs = chunks_of((r - i + P) % P, P);
    struct BlockGrads {
      int j;
      ops::AttentionGrads g;
    };
    std::vector<BlockGrads> blocks;
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 2; ++j) {
        const int64_t a = mine[static_cast<size_t>(h)], b = theirs[static_cast<size_t>(j)];
        if (visibility(a, b) == Visibility::none) continue;
        // Each block's gradients from the merged result (FlashAttention's backward needs only
        // the final out and log-sum-exp of its rows).
        ops::AttentionGrads g = ops::attention_backward(
            d_out.rows(h * c, c), q.rows(h * c, c), held[0].rows(j * c, c), held[1].rows(j * c, c),
            saved.out.rows(h * c, c), saved.lse[static_cast<size_t>(h)],
            block_options(options, a, b, c, S));
        Tensor dq_rows = dq.rows(h * c, c);
        add(dq_rows, g.q);
        blocks.push_back({j, std::move(g)});
      }
    if (sums_arriving) sums_arriving->wait();
    for (const BlockGrads& block : blocks) {
      Tensor dk_rows = sums[0].rows(block.j * c, c), dv_rows = sums[1].rows(block.j * c, c);
      add(dk_rows, block.g.k);
      add(dv_rows, block.g.v);
    }
    // On to the next rank, which holds these keys and values in step i + 1; after the last
    // step the sums go once more, home to their rank (the block held in step P - 1 is rank
    // r + 1's), and this rank's own arrive.
    sent = std::move(sums);
    sums = like(sent);
    sums_arriving = pass_on(sent, sums, cp);
    if (exchange) {
      exchange->wait();
      held = std::move(next);
    }
  }
  sums_arriving->wait();
  ops::AttentionGrads grads;
  grads.q = dq.dtype() == q.dtype() ? dq : dq.to(q.dtype());
  grads.k = sums[0].dtype() == q.dtype() ? sums[0] : sums[0].to(q.dtype());
  grads.v = sums[1].dtype() == q.dtype() ? sums[1] : sums[1].to(q.dtype());
  return grads;
}

}  // namespace moe::nn
