// Megatron's pipeline-parallel schedules (--pipeline-model-parallel-size) as a plain list of
// actions per pipeline rank: which micro-batch each rank forwards or backwards next and which
// activations / gradients it sends to or receives from its neighbours, in Megatron's order. A
// stage executor walks the list; tests and the runtime check all ranks' lists together with
// check_pipeline_schedules. Host-only: no tensors.
//
// Notation: p = pipeline size, r = this rank, M = micro-batches, v = virtual stages per rank
// (model chunks, --num-virtual-stages-per-pipeline-rank), G = micro-batch group size
// (--microbatch-group-size-per-virtual-pipeline-stage, default p). Chunk c of rank r is the
// virtual stage s = c p + r of the v p stages: activations flow s -> s + 1 (rank r chunk c to
// rank r + 1 chunk c; the last rank's chunk c to rank 0's chunk c + 1), gradients s -> s - 1.
//
// v = 1, 1F1B (Megatron's forward_backward_pipelining_without_interleaving):
//   warm-up   W = min(p - r - 1, M) forwards, micro-batches 0 .. W-1
//   steady    for i in 0 .. M-W-1: forward W + i, then backward i
//   cool-down backwards M-W .. M-1
//   The first stage neither receives activations nor sends gradients; the last stage neither
//   sends activations nor receives gradients.
// v > 1, interleaved 1F1B (forward_backward_pipelining_with_interleaving), over T = M v
// "virtual micro-batches" k:
//   micro-batches are taken G at a time (the last group holds the rest, M - G floor((M-1)/G)
//   of them); a group runs all its micro-batches through chunk 0, then chunk 1, ...: with
//   g = the group of k, L = that group's size, o = k - (first k of the group),
//     forward k  = (micro-batch g G + o mod L, chunk o / L)
//     backward k = (the same micro-batch, chunk v - 1 - o / L)     (Megatron's get_model_chunk_id)
//   warm-up   W = min(T, 2 (p - r - 1) + (v - 1) G) forwards
//   steady    for k in 0 .. T-W-1: forward W + k, then backward k
//   cool-down backwards T-W .. T-1
//   After forward k a rank receives the input of forward k + 1, except rank 0, which runs p - 1
//   steps ahead of the last rank: it receives the output of the last rank's forward k - (p - 1)
//   (nothing when k < p - 1 or that was the model's last stage) as its chunk + 1 input, kept
//   until its turn; gradients mirror this with the last rank receiving rank 0's backwards.
//   Megatron's rules, refused here with moe::Error: v > 1 needs p > 1 and p <= G <= M (so
//   M >= p; older Megatron required M divisible by p), and M mod G is 0 or >= p (a shorter last
//   group would leave dependency bubbles).
// forward_only (evaluation): every step is a forward (W = M, resp. T), no backward.
// Bubble (pipeline_timeline.h measures it): every rank idles (p - 1)(f + b) with f / b the time
// of one chunk's forward / backward, (p - 1) / m of the ideal time for 1F1B, (p - 1) / (v m)
// interleaved.
// The compute order does not depend on how the p2p is posted; the batches below follow
// Megatron's blocking calls (its interleaved path without --overlap-p2p-communication; the
// overlapped path posts the same transfers asynchronously and waits before the compute that
// needs them).
//
// Point-to-point: each action says whom it talks to (peer_rank) and which (micro-batch, chunk)
// of THIS rank the tensor belongs to (a send: the chunk that produced it; a receive: the chunk
// that will consume it). The actions of one Megatron p2p call carry the same `batch` number and
// are adjacent in the list: an executor posts them together (one batch_isend_irecv / NCCL
// group) and waits for all of them before going on. This is what keeps the steady state from
// deadlocking: in 1F1B the send of a forward's output and the receive of the next backward's
// gradient (Megatron's send_forward_recv_backward), then the send of the backward's gradient
// and the receive of the next forward's input (send_backward_recv_forward), are pairs; the
// interleaved schedule exchanges all four tensors of a steady step in one batch
// (send_forward_backward_recv_forward_backward), and one forward's send with the next
// forward's receive in warm-up (send_forward_recv_forward), likewise in cool-down. Within a
// batch the activation ops come before the gradient ops, and every pair of ranks sends and
// receives in the same order, so ops without tags (NCCL, MPI) match in order even where both
// neighbours are one rank (p = 2; Megatron's non-overlapped interleaved path refuses p = 2 for
// that reason, its default --overlap-p2p-communication path accepts it).
#pragma once

#include <string>
#include <vector>

namespace moe::train {

enum class PipelineActionKind {
  recv_forward,   // receive the input activation of (microbatch, chunk) from the previous stage
  forward,        // forward (microbatch, chunk)
  send_forward,   // send the output activation of (microbatch, chunk) to the next stage
  recv_backward,  // receive the output gradient of (microbatch, chunk) from the next stage
  backward,       // backward (microbatch, chunk)
  send_backward,  // send the input gradient of (microbatch, chunk) to the previous stage
};

const char* pipeline_action_kind_name(PipelineActionKind kind);
bool is_p2p(PipelineActionKind kind);

struct PipelineAction {
  PipelineActionKind kind = PipelineActionKind::forward;
  int microbatch = 0;
  int chunk = 0;       // the model chunk (virtual stage on this rank), 0 .. v-1
  int peer_rank = -1;  // p2p: the pipeline rank sent to / received from; -1 for compute
  int batch = -1;      // p2p: the communication batch on this rank (posted together); -1 compute

  bool operator==(const PipelineAction&) const = default;
};

// "rank 1 send_forward mb 3 chunk 0 -> rank 2 (batch 7)"-style text, for messages and tests.
std::string describe(const PipelineAction& action);

// This rank's actions, in Megatron's order. pp_size 1 gives forward/backward per micro-batch
// (Megatron's forward_backward_no_pipelining). microbatch_group_size <= 0 means the default,
// pp_size; it only matters when vpp_size > 1.
std::vector<PipelineAction> pipeline_schedule(int pp_size, int pp_rank, int num_microbatches,
                                              int vpp_size = 1, int microbatch_group_size = 0,
                                              bool forward_only = false);

// Every rank's list, index = pipeline rank.
std::vector<std::vector<PipelineAction>> pipeline_schedules(int pp_size, int num_microbatches,
                                                            int vpp_size = 1,
                                                            int microbatch_group_size = 0,
                                                            bool forward_only = false);

// When each action of each rank starts and ends if all ranks run their lists at once: compute
// takes forward_time / backward_time; a batch is posted when its rank reaches it and ends when
// every op in it has met its partner (a send the peer's receive, both posted; ops of a pair of
// ranks meet in the order posted, as untagged NCCL / MPI ops do) plus p2p_time. Throws
// moe::Error on a deadlock (naming each stuck rank and the op it waits on) or when a send meets
// a receive of another kind / micro-batch / stage.
struct PipelineActionTime {
  double start = 0.0;
  double end = 0.0;
};
std::vector<std::vector<PipelineActionTime>> run_pipeline_schedules(
    const std::vector<std::vector<PipelineAction>>& schedules, double forward_time = 1.0,
    double backward_time = 2.0, double p2p_time = 0.0);

// Checks a full set of lists (index = rank) for M micro-batches and v chunks; throws moe::Error
// naming the rank, the action and the broken rule:
//   - fields in range; a p2p action's peer is the neighbour its kind talks to; no p2p across
//     the ends of the pipeline (first virtual stage: no recv_forward / send_backward, last: no
//     send_forward / recv_backward); a batch's actions adjacent, compute outside batches;
//   - each (micro-batch, chunk) forwarded exactly once and (unless forward_only) backwarded
//     exactly once on every rank, its backward after its forward; its input received once before
//     its forward and its output sent once after it (gradients likewise around the backward);
//   - run_pipeline_schedules: no deadlock, every send met by the matching receive, no op left
//     unmatched;
//   - data dependence in time: the forward of (m, stage s) starts after that of (m, s - 1) ends,
//     the backward of (m, s) after that of (m, s + 1).
void check_pipeline_schedules(const std::vector<std::vector<PipelineAction>>& schedules,
                              int num_microbatches, int vpp_size = 1, bool forward_only = false);

}  // namespace moe::train
