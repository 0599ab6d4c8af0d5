// Fixed-size exchange slots: the index work of the alltoall dispatcher's sync-free mode
// (--moe-expert-rank-capacity-factor), where every (source, destination) pair of an expert-
// parallel exchange moves a slot of exactly C rows, so the all-to-all's sizes are known on the
// host without reading the routing's counts back. Three ops, all without a host sync on CUDA:
//
//   make_send_slots     permuted rows (grouped by global expert, as permute_forward leaves
//                       them) -> one slot of C rows per destination rank
//   make_received_slots the received slots (one per source) -> rows grouped by local expert
//   gather_rows         moves rows along either map
//
// Layout. E = P * El experts; destination d owns experts [d*El, (d+1)*El). The permuted buffer
// holds n_e = tokens_per_expert[e] rows of expert e from row o_e = n_0 + ... + n_{e-1} on; rows
// past o_E are unused. Destination d's rows are those of its experts, in that order: r_d =
// n_{d*El} + ... + n_{d*El+El-1} rows from row o_{d*El}. Its slot keeps the first C of them (the
// budget): kept rows of (d, le) = clamp(C - (n_{d*El} + ... + n_{d*El+le-1}), 0, n_{d*El+le});
// send-slot row d*C + i holds destination d's row i (i < min(C, r_d)), the rest are empty.
// A rank receives one slot per source s (in source order, S sources) and the kept counts
// c[s][le] beside it; rows grouped by local expert put, for le = 0..El-1 and s = 0..S-1, the
// c[s][le] rows starting at received row s*C + c[s][0] + ... + c[s][le-1], one after another
// (the synchronising dispatcher's [local expert][source] order); rows past the total are empty.
//
// Each op's two maps are inverse where they are >= 0, so the gradient of a gather along one map
// is the gather along the other (the moved rows never overlap): gradient rule, written.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"

namespace moe::ops {

struct SendSlots {
  Tensor slot_to_row;  // [P*C] i32: the permuted row in each send-slot row, -1 = empty
  Tensor row_to_slot;  // [R] i32: the send-slot row of each permuted row, -1 = not sent (past
                       // the budget C, or past the counted rows)
  Tensor counts;       // [P, El] i64: rows sent per (destination, its local expert)
  Tensor peak_rows;    // [1] i64: the accumulator below, after this call
};

// tokens_per_expert [P*El] i64 (on the permuted rows' device), destinations P >= 1,
// slot_rows C >= 0, num_rows R >= sum(tokens_per_expert) (the permuted buffer's rows).
// peak_rows [1] i64 on the same device accumulates the most rows routed to one destination
// before the budget: peak_rows = max(peak_rows, max_d r_d), so a slot overflowed since it was
// zeroed iff peak_rows > C (a running maximum over calls, kept on the device).
// CPU: the counts are checked (non-negative, summing to at most R); CUDA trusts them.
SendSlots make_send_slots(const Tensor& tokens_per_expert, int64_t destinations, int64_t slot_rows,
                          int64_t num_rows, const Tensor& peak_rows);
// The same with a fresh accumulator (zero before the call): its peak_rows is this call's.
SendSlots make_send_slots(const Tensor& tokens_per_expert, int64_t destinations, int64_t slot_rows,
                          int64_t num_rows);

struct ReceivedSlots {
  Tensor row_to_received;    // [S*C] i32: the received row at each expert-grouped row, -1 = empty
  Tensor received_to_row;    // [S*C] i32: the expert-grouped row of each received row, -1 = empty
  Tensor tokens_per_expert;  // [El] i64: c[0][le] + ... + c[S-1][le]
};

// counts [S, El] i64 (the received c[s][le]), slot_rows C >= 0. CPU: every count must be >= 0
// and every source's row sum <= C (checked); CUDA trusts them (make_send_slots keeps them so).
ReceivedSlots make_received_slots(const Tensor& counts, int64_t slot_rows);

// out [N, ...] with out[j] = x[index[j]] for index[j] >= 0 and zeros for index[j] < 0; x any
// dtype with dim >= 1 (rows along dim 0), index [N] i32 on x's device. An index >= x.size(0) is
// an error on the CPU; the CUDA path cannot check it without a host sync and gives a zero row.
Tensor gather_rows(const Tensor& x, const Tensor& index);

}  // namespace moe::ops
