// Token dispatchers: move each token's hidden state to the ranks holding its experts, grouped
// by local expert, and bring the experts' outputs back, summed per token. Each direction is
// three stages (preprocess / communicate / postprocess, as Megatron splits them) so a
// schedule can overlap the communication with other work; backward runs the mirror images.
//
//   allgather: all-gather tokens, probs and expert ids over ETP x EP; keep the slots of local
//              experts; permute. Combine: unpermute (sum), reduce-scatter over ETP x EP.
//   alltoall:  permute by global expert (so each destination's rows are contiguous); all-to-all
//              over EP (+ all-gather-v over ETP); reorder chunks [source][local expert] ->
//              [local expert][source]. Combine: the inverse of each step, in reverse.
//              With --moe-expert-rank-capacity-factor the exchange moves fixed slots instead
//              (alltoall_dispatcher.h): no host synchronisation.
//
// Gradient rule: activation gradients are written; dispatchers hold no parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "moe/dist/process_group.h"
#include "moe/nn/moe_config.h"
#include "moe/nn/moe_groups.h"
#include "moe/ops/exchange_slots.h"
#include "moe/ops/permute.h"

namespace moe::nn {

// What flows to the experts.
struct DispatchedTokens {
  Tensor x;                  // [R, H] grouped by local expert
  Tensor probs;              // [R] router dtype (f32; f64 in CPU gradient checks)
  Tensor tokens_per_expert;  // [E_local] i64 (device)
  std::vector<int64_t> host_tokens_per_expert;  // the same, when known on the host (else empty)
};

// Per-forward state a dispatcher keeps for combine and backward.
struct DispatchContext {
  // inputs
  Tensor x, probs, expert_ids;
  int64_t num_tokens = 0;
  // permutation
  ops::PermuteMap map;
  ops::Permuted permuted;
  // alltoall bookkeeping (rows per rank / chunk, on the host)
  std::vector<int64_t> input_splits, output_splits;  // EP all-to-all, per EP rank
  std::vector<int64_t> etp_gather_counts;            // ETP all-gather-v, per ETP rank
  std::vector<int64_t> chunk_sizes;                  // received chunks, [etp][ep][local expert]
  std::vector<int64_t> chunk_order, inverse_order;   // to [local expert][etp][ep] and back
  std::vector<int64_t> sorted_chunk_sizes;
  // alltoall's sync-free exchange: every (source, destination) pair moves a slot of
  // slot_rows rows (0: the exchange above, sized on the host); the maps are on the device.
  int64_t slot_rows = 0;
  ops::SendSlots send_slots;
  ops::ReceivedSlots received_slots;
  Tensor received_counts;  // [Q * P, El] i64: the counts beside the received slots
  // stage buffers
  Tensor comm_x, comm_probs;
  DispatchedTokens out;
  Tensor combine_buffer;
  // Exchanges started and not yet waited for (the *_start / *_finish halves below), and the
  // rows a started backward exchange receives.
  std::vector<std::shared_ptr<dist::Work>> in_flight;
  std::vector<Tensor> in_flight_buffers;  // what they send, kept alive until they complete
  // Waits for the exchanges in flight (then forgets them and their buffers).
  void wait_in_flight() {
    for (const std::shared_ptr<dist::Work>& w : in_flight) w->wait();
    in_flight.clear();
    in_flight_buffers.clear();
  }
  Tensor pending_grad;
};

class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;

  // x [T, H], probs [T, K], expert_ids [T, K] (i32, -1 = dropped).
  virtual void dispatch_preprocess(const Tensor& x, const Tensor& probs, const Tensor& expert_ids,
                                   DispatchContext& ctx) = 0;
  virtual void dispatch_communicate(DispatchContext& ctx) = 0;
  virtual DispatchedTokens dispatch_postprocess(DispatchContext& ctx) = 0;

  // expert_out [R, H] -> y [T, H]
  virtual void combine_preprocess(const Tensor& expert_out, DispatchContext& ctx) = 0;
  virtual void combine_communicate(DispatchContext& ctx) = 0;
  virtual Tensor combine_postprocess(DispatchContext& ctx) = 0;

  // Backward of combine: dy [T, H] -> d expert_out [R, H].
  virtual Tensor combine_backward(const Tensor& dy, DispatchContext& ctx) = 0;
  // Backward of dispatch: d x_expert [R, H], d probs_expert [R] -> dx [T, H], dprobs [T, K].
  struct Grads {
    Tensor x, probs;
  };
  virtual Grads dispatch_backward(const Tensor& dx_expert, const Tensor& dprobs_expert,
                                  DispatchContext& ctx) = 0;

  // The communication stages in two halves, so that other work (the shared expert) runs while
  // an exchange is in flight: start() posts it, finish() waits for it (and runs what depends on
  // it). A dispatcher that cannot split them does everything in start().
  virtual void dispatch_communicate_start(DispatchContext& ctx) { dispatch_communicate(ctx); }
  virtual void dispatch_communicate_finish(DispatchContext&) {}
  virtual void combine_backward_start(const Tensor& dy, DispatchContext& ctx) {
    ctx.pending_grad = combine_backward(dy, ctx);
  }
  virtual Tensor combine_backward_finish(DispatchContext& ctx) {
    Tensor d = std::move(ctx.pending_grad);
    ctx.pending_grad = Tensor();
    return d;
  }

  // The sync-free exchange's budget (alltoall with --moe-expert-rank-capacity-factor): the
  // most rows one forward since the last reset routed to one destination rank (a [1] i64
  // tensor on the device, max-accumulated; undefined while the mode is off), the slot each
  // pair had, and the rows an even routing sends each destination (T * K / P), so a caller
  // can say which factor would have sufficed.
  struct SlotUsage {
    Tensor peak_rows;
    int64_t slot_rows = 0;
    double even_rows = 0.0;
  };
  virtual SlotUsage slot_usage() const { return {}; }
  virtual void reset_slot_usage() {}
  // Forwards from now on exchange with the host-sized (synchronising) exchange even when the
  // sync-free one is configured: the redo of a step whose slots overflowed.
  virtual void set_synchronising(bool) {}

  // All stages of one direction, in order.
  DispatchedTokens dispatch(const Tensor& x, const Tensor& probs, const Tensor& expert_ids,
                            DispatchContext& ctx) {
    dispatch_preprocess(x, probs, expert_ids, ctx);
    dispatch_communicate(ctx);
    return dispatch_postprocess(ctx);
  }
  Tensor combine(const Tensor& expert_out, DispatchContext& ctx) {
    combine_preprocess(expert_out, ctx);
    combine_communicate(ctx);
    return combine_postprocess(ctx);
  }
};

// Checks a dispatch's inputs (naming `op`) and starts a fresh context holding them.
void begin_dispatch(const Tensor& x, const Tensor& probs, const Tensor& expert_ids,
                    DispatchContext& ctx, const char* op);

std::unique_ptr<TokenDispatcher> make_token_dispatcher(const MoEConfig& config,
                                                       const MoEGroups& groups);

}  // namespace moe::nn
