// Fixed-size exchange slots: the public entry points (argument checks, device dispatch, output
// allocation) and the CPU reference. The CUDA launchers are in exchange_slots_cuda.cu.
//
// The reference walks the layout the way exchange_slots.h states it (expert by expert, keeping
// a running budget), while the CUDA kernels compute each map entry on its own from prefix sums;
// the tests compare the two exactly.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "moe/ops/exchange_slots.h"
#include "moe/ops/exchange_slots_cuda.h"

namespace moe::ops {
namespace {

constexpr int64_t kMaxIndex = std::numeric_limits<int32_t>::max();

// ---- CPU reference -------------------------------------------------------------------------

void make_send_slots_cpu(const Tensor& tokens_per_expert, int64_t destinations, int64_t slot_rows,
                         SendSlots& out) {
  const int64_t experts = tokens_per_expert.numel();
  const int64_t local = experts / destinations;
  const int64_t* n = tokens_per_expert.data<int64_t>();
  int32_t* slot_to_row = out.slot_to_row.data<int32_t>();
  int32_t* row_to_slot = out.row_to_slot.data<int32_t>();
  int64_t* counts = out.counts.data<int64_t>();
  std::fill(slot_to_row, slot_to_row + out.slot_to_row.numel(), -1);
  std::fill(row_to_slot, row_to_slot + out.row_to_slot.numel(), -1);
  int64_t row = 0;  // o_e: the first permuted row of expert e
  int64_t peak = 0;
  for (int64_t d = 0; d < destinations; ++d) {
    int64_t routed = 0;  // rows of destination d before expert e (then r_d)
    for (int64_t le = 0; le < local; ++le) {
      const int64_t e = d * local + le;
      const int64_t kept = std::clamp<int64_t>(slot_rows - routed, 0, n[e]);
      counts[e] = kept;
      for (int64_t i = 0; i < kept; ++i) {
        const int64_t slot = d * slot_rows + routed + i;
        slot_to_row[slot] = static_cast<int32_t>(row + i);
        row_to_slot[row + i] = static_cast<int32_t>(slot);
      }
      routed += n[e];
      row += n[e];
    }
    peak = std::max(peak, routed);
  }
  int64_t* accumulated = out.peak_rows.data<int64_t>();
  accumulated[0] = std::max(accumulated[0], peak);
}

void make_received_slots_cpu(const Tensor& counts, int64_t slot_rows, ReceivedSlots& out) {
  const int64_t sources = counts.size(0), local = counts.size(1);
  const int64_t* c = counts.data<int64_t>();
  int32_t* row_to_received = out.row_to_received.data<int32_t>();
  int32_t* received_to_row = out.received_to_row.data<int32_t>();
  int64_t* tokens_per_expert = out.tokens_per_expert.data<int64_t>();
  std::fill(row_to_received, row_to_received + out.row_to_received.numel(), -1);
  std::fill(received_to_row, received_to_row + out.received_to_row.numel(), -1);
  // first[s][le] = s*C + c[s][0] + ... + c[s][le-1]: where (s, le)'s rows start in the slots.
  std::vector<int64_t> first(static_cast<size_t>(sources * local));
  for (int64_t s = 0; s < sources; ++s) {
    int64_t at = s * slot_rows;
    for (int64_t le = 0; le < local; ++le) {
      first[s * local + le] = at;
      at += c[s * local + le];
    }
  }
  int64_t row = 0;  // the next expert-grouped row
  for (int64_t le = 0; le < local; ++le) {
    int64_t total = 0;
    for (int64_t s = 0; s < sources; ++s) {
      const int64_t rows = c[s * local + le];
      for (int64_t i = 0; i < rows; ++i, ++row) {
        const int64_t received = first[s * local + le] + i;
        row_to_received[row] = static_cast<int32_t>(received);
        received_to_row[received] = static_cast<int32_t>(row);
      }
      total += rows;
    }
    tokens_per_expert[le] = total;
  }
}

void gather_rows_cpu(const Tensor& x, const Tensor& index, size_t row_bytes, Tensor& out) {
  const int64_t rows = index.numel();
  const int32_t* idx = index.data<int32_t>();
  const auto* in = static_cast<const char*>(x.raw());
  auto* o = static_cast<char*>(out.raw());
  for (int64_t j = 0; j < rows; ++j) {
    char* dst = o + static_cast<size_t>(j) * row_bytes;
    if (idx[j] < 0)
      std::memset(dst, 0, row_bytes);
    else
      std::memcpy(dst, in + static_cast<size_t>(idx[j]) * row_bytes, row_bytes);
  }
}

}  // namespace

SendSlots make_send_slots(const Tensor& tokens_per_expert, int64_t destinations, int64_t slot_rows,
                          int64_t num_rows) {
  const Tensor peak_rows = Tensor::zeros(
      {1}, DType::i64, tokens_per_expert.defined() ? tokens_per_expert.device() : Device::cpu());
  return make_send_slots(tokens_per_expert, destinations, slot_rows, num_rows, peak_rows);
}

SendSlots make_send_slots(const Tensor& tokens_per_expert, int64_t destinations, int64_t slot_rows,
                          int64_t num_rows, const Tensor& peak_rows) {
  const char* op = "make_send_slots";
  check_defined(tokens_per_expert, op, "tokens_per_expert");
  check_defined(peak_rows, op, "peak_rows");
  check_shape(peak_rows, {1}, op, "peak_rows");
  check_dtype(peak_rows, DType::i64, op, "peak_rows");
  MOE_CHECK(peak_rows.device() == tokens_per_expert.device(), op,
            ": peak_rows must be on tokens_per_expert's device");
  check_dim(tokens_per_expert, 1, op, "tokens_per_expert");
  check_dtype(tokens_per_expert, DType::i64, op, "tokens_per_expert");
  MOE_CHECK(destinations >= 1, op, ": destinations must be >= 1, got ", destinations);
  MOE_CHECK(slot_rows >= 0, op, ": slot_rows must be >= 0, got ", slot_rows);
  MOE_CHECK(num_rows >= 0, op, ": num_rows must be >= 0, got ", num_rows);
  const int64_t experts = tokens_per_expert.size(0);
  MOE_CHECK(experts > 0 && experts % destinations == 0, op, ": tokens_per_expert must hold ",
            "destinations * local experts entries (a positive multiple of ", destinations,
            "), got shape ", shape_str(tokens_per_expert.shape()));
  MOE_CHECK(slot_rows <= kMaxIndex / destinations && num_rows <= kMaxIndex, op, ": ", destinations,
            " slots of ", slot_rows, " rows and ", num_rows,
            " permuted rows do not fit the i32 indices");
  const int64_t local = experts / destinations;
  const Device device = tokens_per_expert.device();
  SendSlots out;
  out.slot_to_row = Tensor::empty({destinations * slot_rows}, DType::i32, device);
  out.row_to_slot = Tensor::empty({num_rows}, DType::i32, device);
  out.counts = Tensor::empty({destinations, local}, DType::i64, device);
  out.peak_rows = peak_rows;  // the caller's accumulator (a handle to its storage)
  if (tokens_per_expert.is_cuda()) {
    MOE_CUDA_ONLY(detail::make_send_slots_cuda(tokens_per_expert, destinations, slot_rows, out);
                  return out;)
  }
  const int64_t* n = tokens_per_expert.data<int64_t>();
  int64_t total = 0;
  for (int64_t e = 0; e < experts; ++e) {
    MOE_CHECK(n[e] >= 0, op, ": tokens_per_expert[", e, "] is negative (", n[e], ")");
    total += n[e];
    MOE_CHECK(total <= num_rows, op,
              ": tokens_per_expert adds up to more than num_rows = ", num_rows, " (", total,
              " by expert ", e, ")");
  }
  make_send_slots_cpu(tokens_per_expert, destinations, slot_rows, out);
  return out;
}

ReceivedSlots make_received_slots(const Tensor& counts, int64_t slot_rows) {
  const char* op = "make_received_slots";
  check_defined(counts, op, "counts");
  check_dim(counts, 2, op, "counts");
  check_dtype(counts, DType::i64, op, "counts");
  MOE_CHECK(slot_rows >= 0, op, ": slot_rows must be >= 0, got ", slot_rows);
  const int64_t sources = counts.size(0), local = counts.size(1);
  MOE_CHECK(sources >= 1 && local >= 1, op,
            ": counts must be [sources, local experts] with both >= 1, got shape ",
            shape_str(counts.shape()));
  MOE_CHECK(slot_rows <= kMaxIndex / sources, op, ": ", sources, " slots of ", slot_rows,
            " rows do not fit the i32 indices");
  const Device device = counts.device();
  ReceivedSlots out;
  out.row_to_received = Tensor::empty({sources * slot_rows}, DType::i32, device);
  out.received_to_row = Tensor::empty({sources * slot_rows}, DType::i32, device);
  out.tokens_per_expert = Tensor::empty({local}, DType::i64, device);
  if (counts.is_cuda()) {
    MOE_CUDA_ONLY(detail::make_received_slots_cuda(counts, slot_rows, out); return out;)
  }
  const int64_t* c = counts.data<int64_t>();
  for (int64_t s = 0; s < sources; ++s) {
    int64_t row_sum = 0;
    for (int64_t le = 0; le < local; ++le) {
      const int64_t v = c[s * local + le];
      MOE_CHECK(v >= 0, op, ": counts[", s, "][", le, "] is negative (", v, ")");
      row_sum += v;
    }
    MOE_CHECK(row_sum <= slot_rows, op, ": source ", s, " sends ", row_sum,
              " rows (the sum of counts[", s, "]), more than its slot of ", slot_rows);
  }
  make_received_slots_cpu(counts, slot_rows, out);
  return out;
}

Tensor gather_rows(const Tensor& x, const Tensor& index) {
  const char* op = "gather_rows";
  check_defined(x, op, "x");
  check_defined(index, op, "index");
  MOE_CHECK(x.dim() >= 1, op, ": x must have at least one dimension (rows), got a 0-d tensor");
  check_dim(index, 1, op, "index");
  check_dtype(index, DType::i32, op, "index");
  check_same_device(x, index, op);
  Tensor out = Tensor::empty(with_dim0(x.shape(), index.size(0)), x.dtype(), x.device());
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::gather_rows_by_index_cuda(x, index, out); return out;)
  }
  const int32_t* idx = index.data<int32_t>();
  for (int64_t j = 0; j < index.size(0); ++j) {
    MOE_CHECK(idx[j] < x.size(0), op, ": index[", j, "] = ", idx[j], " is out of range for x with ",
              x.size(0), " rows");
  }
  if (out.numel() > 0)
    gather_rows_cpu(x, index, out.nbytes() / static_cast<size_t>(index.size(0)), out);
  return out;
}

}  // namespace moe::ops
