// Internal: CUDA launchers of the permutation ops (permute_map_cuda.cu: the index work;
// permute_cuda.cu: moving rows). Plain C++ so permute_cpu.cpp can call them; the public entry
// points in permute_cpu.cpp check every argument and allocate the outputs first.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/core/tensor.h"
#include "moe/ops/permute.h"

namespace moe::ops::detail {

// Fills map.slot_to_row, map.row_to_slot and map.tokens_per_expert (allocated by the caller,
// shapes as in PermuteMap) without a host sync. capacity_rows: rows per expert when padding to
// capacity (0 otherwise); kept_capacity: slots an expert keeps at most (0 = unbounded).
void make_permute_map_cuda(const Tensor& expert_ids, int64_t num_experts, int64_t pad_multiple,
                           int64_t capacity_rows, int64_t kept_capacity, PermuteMap& map);

// out[t, j] = expert_ids[t, j] if the slot is within its expert's capacity, else -1.
void drop_over_capacity_cuda(const Tensor& expert_ids, const Tensor& probs, int64_t num_experts,
                             int64_t capacity, DropPolicy policy, Tensor& out);

// dst[r] = src[row_to_slot[r] / topk] (zeros where row_to_slot[r] < 0), any dtype; and, when
// probs is defined, probs_out[r] = probs[row_to_slot[r]] (0 for padding rows).
void gather_rows_cuda(const Tensor& src, const Tensor& probs, const Tensor& row_to_slot,
                      int64_t topk, Tensor& dst, Tensor& probs_out);

// dst[t] = sum_j src[slot_to_row[t*topk + j]] over the kept slots, in slot order, computed in
// fp32 (fp64 for f64); and, when grad_probs_perm is defined, grad_probs[t*topk + j] =
// grad_probs_perm[slot_to_row[...]] (0 for dropped slots).
void sum_slot_rows_cuda(const Tensor& src, const Tensor& grad_probs_perm, const Tensor& slot_to_row,
                        int64_t topk, Tensor& dst, Tensor& grad_probs);

// One contiguous byte range per chunk: dst[dst_offset, +bytes) = src[src_offset, +bytes).
struct ChunkCopy {
  int64_t src_offset;
  int64_t dst_offset;
  int64_t bytes;
};
void copy_chunks_cuda(const Tensor& src, const std::vector<ChunkCopy>& chunks, Tensor& dst);

}  // namespace moe::ops::detail
