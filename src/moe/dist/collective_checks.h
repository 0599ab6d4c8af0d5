// The argument checks and cross-rank agreement checks every backend makes, in one place, so a
// bad call reads the same on the Local and the MPI backend:
//  - check_<collective>: this rank's own arguments (defined tensors, dtypes, shapes against
//    counts); a message starts with "<collective> (rank r of n, world ranks [...])";
//  - CallRecord + check_records_agree: the call as each member made it; with every member's
//    record at hand a backend throws the same message on every member when they disagree
//    ("the in shape differs across ranks: rank 0 [2, 3], rank 1 [3, 3]").
#pragma once

#include <cstdint>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/dist/process_group.h"

namespace moe::dist::detail {

template <class Range>
std::string list_str(const Range& values) {
  std::ostringstream out;
  out << "[";
  bool first = true;
  for (const auto& v : values) {
    out << (first ? "" : ", ") << v;
    first = false;
  }
  out << "]";
  return out.str();
}
std::string groups_str(const std::vector<std::vector<int>>& groups);

int64_t sum_of(std::span<const int64_t> counts);
// Elements per row (along dim 0) of a tensor of this shape; the shape after dim 0; the shape
// with dim 0 replaced.
int64_t row_elems(const Shape& shape);
Shape row_shape(const Shape& shape);
Shape with_rows(const Shape& shape, int64_t rows);
size_t row_bytes(const Tensor& t);

// "all_gather (rank 1 of 4, world ranks [0, 2, 4, 6])": the start of a rank's own messages.
std::string who(const ProcessGroup& group, const char* collective);

// ---- this rank's arguments ------------------------------------------------------------------
void check_reducible(const ProcessGroup& group, const char* collective, DType dtype);
// Both defined, same dtype and device, at least 1-D (split along dim 0), same row shape.
void check_in_out(const ProcessGroup& group, const char* collective, const Tensor& in,
                  const Tensor& out);
// One non-negative entry per rank.
std::vector<int64_t> check_counts(const ProcessGroup& group, const char* collective,
                                  const char* what, std::span<const int64_t> counts);

void check_all_reduce(const ProcessGroup& group, const Tensor& t);
void check_all_gather(const ProcessGroup& group, const Tensor& in, const Tensor& out);
// Returns the counts.
std::vector<int64_t> check_all_gather_v(const ProcessGroup& group, const Tensor& in,
                                        const Tensor& out, std::span<const int64_t> counts);
// Returns the rows of each rank's chunk.
int64_t check_reduce_scatter(const ProcessGroup& group, const Tensor& in, const Tensor& out);
std::vector<int64_t> check_reduce_scatter_v(const ProcessGroup& group, const Tensor& in,
                                            const Tensor& out, std::span<const int64_t> counts);
// Returns {send counts, receive counts}.
std::pair<std::vector<int64_t>, std::vector<int64_t>> check_all_to_all_v(
    const ProcessGroup& group, const Tensor& in, const Tensor& out,
    std::span<const int64_t> send_counts, std::span<const int64_t> recv_counts);
void check_broadcast(const ProcessGroup& group, const Tensor& t, int root);
// Defined tensors and peers that are ranks of the group.
void check_batch_p2p(const ProcessGroup& group, std::span<const P2POp> ops);
// Non-empty, disjoint lists of ranks of the group. Returns {index of the list holding this
// rank, its position there}, or {-1, -1} when no list holds it.
std::pair<int, int> check_split(const ProcessGroup& group,
                                const std::vector<std::vector<int>>& groups);

// "batch_p2p (rank 0 of 2, ...): rank 1 sent f32 [2, 3] but rank 0 receives into f32 [3, 3]".
void check_p2p_match(const ProcessGroup& group, int sender, DType sent_dtype,
                     const Shape& sent_shape, const Tensor& recv);

// ---- agreement across ranks -----------------------------------------------------------------
// A member's call as the others see it (no data).
struct CallRecord {
  std::string collective;  // "all_reduce", ..., "barrier", "split"
  DType dtype = DType::u8;
  bool cuda = false;
  Shape shape;
  ReduceOp op = ReduceOp::sum;
  int root = -1;
  std::vector<int64_t> counts;           // all_gather_v, reduce_scatter_v; all_to_all_v: sends
  std::vector<int64_t> recv_counts;      // all_to_all_v
  std::vector<std::vector<int>> groups;  // split
  std::string error;  // a backend that gathers records: this member's argument error, if any
};

// The record of a call, with the arguments that must agree across members.
CallRecord call_record(const char* collective, const Tensor& t);

// Throws moe::Error (the same message on every member given the same records, which are
// indexed by group rank) unless all members made the same call: the collective, then dtype and
// device kind, then what the collective needs to agree on (shapes, op, root, counts; for
// all_to_all_v that each rank sends what its peer expects to receive; for split the lists).
void check_records_agree(const std::vector<CallRecord>& records,
                         const std::vector<int>& world_ranks);

// A byte string of a record and back (backends that gather records across processes).
std::string encode_record(const CallRecord& record);
CallRecord decode_record(std::string_view bytes);

}  // namespace moe::dist::detail
