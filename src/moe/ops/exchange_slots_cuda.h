// Internal: CUDA launchers of the exchange-slot ops (exchange_slots_cuda.cu). Plain C++ so
// exchange_slots_cpu.cpp can call them; the public entry points there check every argument and
// allocate the outputs first. None of them synchronises with the host.
#pragma once

#include <cstdint>

#include "moe/core/tensor.h"
#include "moe/ops/exchange_slots.h"

namespace moe::ops::detail {

// Fills out.slot_to_row, out.row_to_slot and out.counts (allocated by the caller, shapes as in
// SendSlots) from tokens_per_expert [destinations * El] i64, and raises out.peak_rows (the
// caller's accumulator) to the most rows routed to one destination.
void make_send_slots_cuda(const Tensor& tokens_per_expert, int64_t destinations, int64_t slot_rows,
                          SendSlots& out);

// Fills out.row_to_received, out.received_to_row and out.tokens_per_expert (allocated by the
// caller) from counts [S, El] i64.
void make_received_slots_cuda(const Tensor& counts, int64_t slot_rows, ReceivedSlots& out);

// out[j] = x[index[j]] for 0 <= index[j] < x.size(0), zeros otherwise; rows are bytes (any
// dtype), out allocated by the caller with index.size(0) rows.
void gather_rows_by_index_cuda(const Tensor& x, const Tensor& index, Tensor& out);

}  // namespace moe::ops::detail
