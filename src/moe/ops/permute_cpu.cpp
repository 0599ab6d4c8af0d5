// Token permutation: the public entry points (argument checks, device dispatch) and the CPU
// reference. The CUDA launchers are in permute_map_cuda.cu (index work) and permute_cuda.cu
// (moving rows).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "moe/ops/permute.h"
#include "moe/ops/permute_cuda.h"

namespace moe::ops {
namespace {

constexpr int64_t kMaxIndex = std::numeric_limits<int32_t>::max();

int64_t round_up(int64_t n, int64_t multiple) {
  return (n + multiple - 1) / multiple * multiple;
}

void check_map(const PermuteMap& map, const char* op) {
  check_dtype(map.slot_to_row, DType::i32, op, "map.slot_to_row");
  check_dtype(map.row_to_slot, DType::i32, op, "map.row_to_slot");
  check_dtype(map.tokens_per_expert, DType::i64, op, "map.tokens_per_expert");
  check_shape(map.slot_to_row, {map.num_tokens * map.topk}, op, "map.slot_to_row");
  check_shape(map.row_to_slot, {map.num_rows}, op, "map.row_to_slot");
  check_same_device(map.slot_to_row, map.row_to_slot, op);
  MOE_CHECK(map.topk > 0, op, ": map.topk must be positive, got ", map.topk);
}

// rows [num_rows, cols] of `t` (2-D), on the map's device.
void check_rows(const Tensor& t, int64_t num_rows, const PermuteMap& map, const char* op,
                const char* name) {
  check_dim(t, 2, op, name);
  MOE_CHECK(t.size(0) == num_rows, op, ": ", name, " must have ", num_rows, " rows, got shape ",
            shape_str(t.shape()));
  check_same_device(t, map.slot_to_row, op);
}

void check_probs_dtype(const Tensor& probs, const char* op, const char* name) {
  MOE_CHECK(probs.dtype() == DType::f32 || probs.dtype() == DType::f64, op, ": ", name,
            " must be f32 or f64, got ", probs.dtype());
}

// ---- CPU reference -------------------------------------------------------------------------

// dst row r = src row (row_to_slot[r] / topk) or zeros; probs_out[r] = probs[row_to_slot[r]].
void gather_rows_cpu(const Tensor& src, const Tensor& probs, const Tensor& row_to_slot,
                     int64_t topk, Tensor& dst, Tensor& probs_out) {
  const int64_t rows = dst.size(0);
  if (rows == 0) return;
  const size_t row_bytes = dst.nbytes() / static_cast<size_t>(rows);
  const auto* in = static_cast<const char*>(src.raw());
  auto* out = static_cast<char*>(dst.raw());
  const int32_t* r2s = row_to_slot.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    char* o = out + static_cast<size_t>(r) * row_bytes;
    if (r2s[r] < 0)
      std::memset(o, 0, row_bytes);
    else
      std::memcpy(o, in + static_cast<size_t>(r2s[r] / topk) * row_bytes, row_bytes);
  }
  if (!probs.defined()) return;
  dispatch<DType::f32, DType::f64>(probs.dtype(), "permute (probs)", [&]<class P>() {
    const P* p = probs.data<P>();
    P* po = probs_out.data<P>();
    for (int64_t r = 0; r < rows; ++r) po[r] = r2s[r] < 0 ? P(0) : p[r2s[r]];
  });
}

// dst row t = sum_j src row slot_to_row[t*topk + j] (kept slots, j ascending), in the compute
// type (float for bf16/f16); grad_probs[t*topk + j] = grad_probs_perm[slot_to_row[...]] or 0.
void sum_slot_rows_cpu(const Tensor& src, const Tensor& grad_probs_perm, const Tensor& slot_to_row,
                       int64_t topk, Tensor& dst, Tensor& grad_probs) {
  const int64_t tokens = dst.size(0), cols = dst.size(1);
  const int32_t* s2r = slot_to_row.data<int32_t>();
  dispatch_float(src.dtype(), "unpermute / permute_backward", [&]<class T>() {
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* in = src.data<T>();
    T* out = dst.data<T>();
    std::vector<A> acc(static_cast<size_t>(cols));
    for (int64_t t = 0; t < tokens; ++t) {
      std::fill(acc.begin(), acc.end(), A(0));
      for (int64_t j = 0; j < topk; ++j) {
        const int32_t r = s2r[t * topk + j];
        if (r < 0) continue;
        const T* row = in + int64_t(r) * cols;
        for (int64_t c = 0; c < cols; ++c) acc[c] += static_cast<A>(row[c]);
      }
      T* o = out + t * cols;
      for (int64_t c = 0; c < cols; ++c) o[c] = T(acc[c]);
    }
  });
  if (!grad_probs.defined()) return;
  dispatch<DType::f32, DType::f64>(grad_probs.dtype(), "permute_backward (probs)", [&]<class P>() {
    const P* g = grad_probs_perm.data<P>();
    P* out = grad_probs.data<P>();
    for (int64_t s = 0, n = tokens * topk; s < n; ++s) out[s] = s2r[s] < 0 ? P(0) : g[s2r[s]];
  });
}

void make_permute_map_cpu(const Tensor& expert_ids, int64_t num_experts, int64_t pad_multiple,
                          int64_t capacity_rows, int64_t kept_capacity, PermuteMap& map) {
  const int64_t n = expert_ids.numel();
  const int32_t* ids = expert_ids.data<int32_t>();
  std::vector<int64_t> count(static_cast<size_t>(num_experts), 0);
  for (int64_t s = 0; s < n; ++s) {
    MOE_CHECK(ids[s] < num_experts, "make_permute_map: expert id ", ids[s], " at slot ", s,
              " is out of range for ", num_experts, " experts");
    if (ids[s] >= 0) ++count[ids[s]];
  }
  int64_t* tokens_per_expert = map.tokens_per_expert.data<int64_t>();
  std::vector<int64_t> next_row(static_cast<size_t>(num_experts));
  int64_t start = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t rows = capacity_rows > 0 ? capacity_rows : round_up(count[e], pad_multiple);
    tokens_per_expert[e] = rows;
    next_row[e] = start;
    start += rows;
  }
  int32_t* r2s = map.row_to_slot.data<int32_t>();
  int32_t* s2r = map.slot_to_row.data<int32_t>();
  std::fill(r2s, r2s + map.num_rows, -1);
  std::vector<int64_t> rank(static_cast<size_t>(num_experts), 0);
  for (int64_t s = 0; s < n; ++s) {
    const int32_t e = ids[s];
    s2r[s] = -1;
    if (e < 0) continue;
    if (kept_capacity > 0 && rank[e] >= kept_capacity) continue;
    const int64_t row = next_row[e] + rank[e]++;
    s2r[s] = static_cast<int32_t>(row);
    r2s[row] = static_cast<int32_t>(s);
  }
}

void drop_over_capacity_cpu(const Tensor& expert_ids, const Tensor& probs, int64_t num_experts,
                            int64_t capacity, DropPolicy policy, Tensor& out) {
  const int64_t n = expert_ids.numel();
  const int32_t* ids = expert_ids.data<int32_t>();
  int32_t* o = out.data<int32_t>();
  // Slots of each expert in ascending slot order.
  std::vector<std::vector<int64_t>> slots(static_cast<size_t>(num_experts));
  for (int64_t s = 0; s < n; ++s) {
    MOE_CHECK(ids[s] < num_experts, "drop_over_capacity: expert id ", ids[s], " at slot ", s,
              " is out of range for ", num_experts, " experts");
    o[s] = -1;
    if (ids[s] >= 0) slots[ids[s]].push_back(s);
  }
  for (int64_t e = 0; e < num_experts; ++e) {
    std::vector<int64_t>& list = slots[e];
    if (policy == DropPolicy::probs) {
      // Highest prob first; stable, so equal probs keep ascending slot order.
      dispatch<DType::f32, DType::f64>(probs.dtype(), "drop_over_capacity (probs)", [&]<class P>() {
        const P* p = probs.data<P>();
        std::stable_sort(list.begin(), list.end(),
                         [&](int64_t a, int64_t b) { return p[a] > p[b]; });
      });
    }
    const size_t kept = std::min<size_t>(list.size(), static_cast<size_t>(capacity));
    for (size_t i = 0; i < kept; ++i) o[list[i]] = static_cast<int32_t>(e);
  }
}

}  // namespace

PermuteMap make_permute_map(const Tensor& expert_ids, const PermuteConfig& config) {
  const char* op = "make_permute_map";
  check_dim(expert_ids, 2, op, "expert_ids");
  check_dtype(expert_ids, DType::i32, op, "expert_ids");
  const int64_t experts = config.num_experts;
  MOE_CHECK(experts > 0, op, ": num_experts must be positive, got ", experts);
  MOE_CHECK(config.pad_multiple >= 1, op, ": pad_multiple must be >= 1, got ", config.pad_multiple);
  MOE_CHECK(!config.pad_to_capacity || config.capacity > 0, op,
            ": pad_to_capacity needs a positive capacity, got ", config.capacity);
  const int64_t tokens = expert_ids.size(0), topk = expert_ids.size(1);
  MOE_CHECK(topk > 0, op, ": expert_ids must have at least one column (topk), got shape ",
            shape_str(expert_ids.shape()));
  const int64_t slots = tokens * topk;
  const int64_t capacity_rows =
      config.pad_to_capacity ? round_up(config.capacity, config.pad_multiple) : 0;
  const int64_t kept_capacity = config.pad_to_capacity ? config.capacity : 0;
  const int64_t rows = config.pad_to_capacity
                           ? experts * capacity_rows
                           : slots + std::min(experts, slots) * (config.pad_multiple - 1);
  MOE_CHECK(slots <= kMaxIndex && rows <= kMaxIndex, op, ": ", slots, " slots and ", rows,
            " rows do not fit the i32 indices");

  PermuteMap map;
  map.num_tokens = tokens;
  map.topk = topk;
  map.num_rows = rows;
  const Device device = expert_ids.device();
  map.slot_to_row = Tensor::empty({slots}, DType::i32, device);
  map.row_to_slot = Tensor::empty({rows}, DType::i32, device);
  map.tokens_per_expert = Tensor::empty({experts}, DType::i64, device);
  if (expert_ids.is_cuda()) {
    MOE_CUDA_ONLY(detail::make_permute_map_cuda(expert_ids, experts, config.pad_multiple,
                                                capacity_rows, kept_capacity, map);
                  return map;)
  }
  make_permute_map_cpu(expert_ids, experts, config.pad_multiple, capacity_rows, kept_capacity, map);
  return map;
}

Permuted permute_forward(const Tensor& x, const Tensor& probs, const PermuteMap& map) {
  const char* op = "permute_forward";
  check_map(map, op);
  check_rows(x, map.num_tokens, map, op, "x");
  Permuted out;
  out.x = Tensor::empty({map.num_rows, x.size(1)}, x.dtype(), x.device());
  if (probs.defined()) {
    check_shape(probs, {map.num_tokens, map.topk}, op, "probs");
    check_probs_dtype(probs, op, "probs");
    check_same_device(probs, x, op);
    out.probs = Tensor::empty({map.num_rows}, probs.dtype(), x.device());
  }
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::gather_rows_cuda(x, probs, map.row_to_slot, map.topk, out.x, out.probs);
                  return out;)
  }
  gather_rows_cpu(x, probs, map.row_to_slot, map.topk, out.x, out.probs);
  return out;
}

PermuteGrads permute_backward(const Tensor& d_x_perm, const Tensor& d_probs_perm,
                              const PermuteMap& map) {
  const char* op = "permute_backward";
  check_map(map, op);
  check_rows(d_x_perm, map.num_rows, map, op, "d_x_perm");
  PermuteGrads grads;
  grads.x = Tensor::empty({map.num_tokens, d_x_perm.size(1)}, d_x_perm.dtype(), d_x_perm.device());
  if (d_probs_perm.defined()) {
    check_shape(d_probs_perm, {map.num_rows}, op, "d_probs_perm");
    check_probs_dtype(d_probs_perm, op, "d_probs_perm");
    check_same_device(d_probs_perm, d_x_perm, op);
    grads.probs =
        Tensor::empty({map.num_tokens, map.topk}, d_probs_perm.dtype(), d_x_perm.device());
  }
  if (d_x_perm.is_cuda()) {
    MOE_CUDA_ONLY(detail::sum_slot_rows_cuda(d_x_perm, d_probs_perm, map.slot_to_row, map.topk,
                                             grads.x, grads.probs);
                  return grads;)
  }
  sum_slot_rows_cpu(d_x_perm, d_probs_perm, map.slot_to_row, map.topk, grads.x, grads.probs);
  return grads;
}

Tensor unpermute_forward(const Tensor& y_perm, const PermuteMap& map) {
  const char* op = "unpermute_forward";
  check_map(map, op);
  check_rows(y_perm, map.num_rows, map, op, "y_perm");
  Tensor y = Tensor::empty({map.num_tokens, y_perm.size(1)}, y_perm.dtype(), y_perm.device());
  Tensor no_probs;
  if (y_perm.is_cuda()) {
    MOE_CUDA_ONLY(
        detail::sum_slot_rows_cuda(y_perm, Tensor(), map.slot_to_row, map.topk, y, no_probs);
        return y;)
  }
  sum_slot_rows_cpu(y_perm, Tensor(), map.slot_to_row, map.topk, y, no_probs);
  return y;
}

Tensor unpermute_backward(const Tensor& d_y, const PermuteMap& map) {
  const char* op = "unpermute_backward";
  check_map(map, op);
  check_rows(d_y, map.num_tokens, map, op, "d_y");
  Tensor d_y_perm = Tensor::empty({map.num_rows, d_y.size(1)}, d_y.dtype(), d_y.device());
  Tensor no_probs;
  if (d_y.is_cuda()) {
    MOE_CUDA_ONLY(
        detail::gather_rows_cuda(d_y, Tensor(), map.row_to_slot, map.topk, d_y_perm, no_probs);
        return d_y_perm;)
  }
  gather_rows_cpu(d_y, Tensor(), map.row_to_slot, map.topk, d_y_perm, no_probs);
  return d_y_perm;
}

int64_t expert_capacity(int64_t num_tokens, int64_t topk, int64_t num_experts, double factor) {
  MOE_CHECK(num_tokens >= 0 && topk > 0 && num_experts > 0,
            "expert_capacity: bad sizes T=", num_tokens, " K=", topk, " E=", num_experts);
  MOE_CHECK(factor > 0 && std::isfinite(factor),
            "expert_capacity: capacity factor must be "
            "positive and finite, got ",
            factor);
  return static_cast<int64_t>(std::ceil(static_cast<double>(num_tokens * topk) /
                                        static_cast<double>(num_experts) * factor));
}

Tensor drop_over_capacity(const Tensor& expert_ids, const Tensor& probs, int64_t num_experts,
                          int64_t capacity, DropPolicy policy) {
  const char* op = "drop_over_capacity";
  check_dim(expert_ids, 2, op, "expert_ids");
  check_dtype(expert_ids, DType::i32, op, "expert_ids");
  MOE_CHECK(num_experts > 0, op, ": num_experts must be positive, got ", num_experts);
  MOE_CHECK(capacity >= 0, op, ": capacity must be >= 0, got ", capacity);
  if (policy == DropPolicy::probs) {
    check_shape(probs, expert_ids.shape(), op, "probs");
    check_probs_dtype(probs, op, "probs");
    check_same_device(probs, expert_ids, op);
  }
  MOE_CHECK(expert_ids.numel() <= kMaxIndex, op, ": too many slots (", expert_ids.numel(), ")");
  Tensor out = Tensor::empty(expert_ids.shape(), DType::i32, expert_ids.device());
  if (expert_ids.is_cuda()) {
    MOE_CUDA_ONLY(
        detail::drop_over_capacity_cuda(expert_ids, probs, num_experts, capacity, policy, out);
        return out;)
  }
  drop_over_capacity_cpu(expert_ids, probs, num_experts, capacity, policy, out);
  return out;
}

Tensor sort_chunks(const Tensor& x, std::span<const int64_t> chunk_sizes,
                   std::span<const int64_t> order) {
  const char* op = "sort_chunks";
  check_defined(x, op, "x");
  MOE_CHECK(x.dim() >= 1, op, ": x must have at least one dimension, got a 0-d tensor");
  const size_t n = chunk_sizes.size();
  MOE_CHECK(order.size() == n, op, ": ", n, " chunk sizes but ", order.size(), " order entries");
  std::vector<int64_t> src_start(n + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    MOE_CHECK(chunk_sizes[i] >= 0, op, ": chunk ", i, " has negative size ", chunk_sizes[i]);
    src_start[i + 1] = src_start[i] + chunk_sizes[i];
  }
  MOE_CHECK(src_start[n] == x.size(0), op, ": chunk sizes add up to ", src_start[n],
            " rows, x has ", x.size(0));
  std::vector<bool> seen(n, false);
  for (size_t i = 0; i < n; ++i) {
    MOE_CHECK(order[i] >= 0 && order[i] < static_cast<int64_t>(n) && !seen[order[i]], op,
              ": order is not a permutation of 0..", n - 1, " (entry ", i, " is ", order[i], ")");
    seen[order[i]] = true;
  }
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t row_bytes = x.size(0) == 0 ? 0 : static_cast<int64_t>(x.nbytes()) / x.size(0);
  std::vector<detail::ChunkCopy> copies;
  copies.reserve(n);
  int64_t dst_row = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t rows = chunk_sizes[order[i]];
    if (rows > 0)
      copies.push_back({src_start[order[i]] * row_bytes, dst_row * row_bytes, rows * row_bytes});
    dst_row += rows;
  }
  if (x.is_cuda()) {
    MOE_CUDA_ONLY(detail::copy_chunks_cuda(x, copies, out); return out;)
  }
  const auto* in = static_cast<const char*>(x.raw());
  auto* o = static_cast<char*>(out.raw());
  for (const detail::ChunkCopy& c : copies)
    std::memcpy(o + c.dst_offset, in + c.src_offset, static_cast<size_t>(c.bytes));
  return out;
}

}  // namespace moe::ops
