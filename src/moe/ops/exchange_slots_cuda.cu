// CUDA index work of the exchange slots, with no host sync: each op is one single-block kernel
// that turns the small count table (E = P*El or S*El entries) into prefix sums in a device
// scratch buffer, then one grid-stride kernel that computes every entry of both maps on its own
// from those sums (a binary search where a row must find its block), so every entry is written
// exactly once: no memset, no atomics, deterministic.
//
// make_send_slots: starts[e] = o_e (starts[E] = o_E). Destination d's rows are the contiguous
// range [starts[d*El], starts[(d+1)*El]), so
//   slot_to_row[d*C + i] = starts[d*El] + i           if i < r_d, else -1
//   row_to_slot[r]       = d*C + (r - starts[d*El])   if that is < C, else -1 (d: the
//                          destination whose range holds r; -1 past o_E)
// make_received_slots: F = the row-major exclusive prefix of c, G = the [le][s]-order one:
//   pre[s][le] = F(s, le) - F(s, 0) (le = 0..El): (s, le)'s rows in source s's slot start at
//   s*C + pre[s][le]; G(le, s) is where they start among the expert-grouped rows.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "moe/core/cuda_utils.h"
#include "moe/ops/exchange_slots_cuda.h"
#include "moe/ops/row_kernels_cuda.cuh"

namespace moe::ops::detail {
namespace {

constexpr int kThreads = 256;

using Scan = cub::BlockScan<int64_t, kThreads>;

struct MaxOf {
  __device__ int64_t operator()(int64_t a, int64_t b) const { return a > b ? a : b; }
};

// out[k] = value(0) + ... + value(k-1) for k < n, out[n] = the total: one block, kThreads at a
// time with a running carry. Ends with a barrier, so the block may read out afterwards (plain
// loads: out is written by this kernel, never read through the read-only cache).
template <class Value>
__device__ void block_exclusive_scan(int64_t n, Value value, int64_t* out,
                                     typename Scan::TempStorage& temp) {
  int64_t carry = 0;
  for (int64_t start = 0; start < n; start += kThreads) {
    const int64_t k = start + threadIdx.x;
    const int64_t v = k < n ? value(k) : 0;
    int64_t prefix, sum;
    Scan(temp).ExclusiveSum(v, prefix, sum);
    if (k < n) out[k] = carry + prefix;
    carry += sum;
    __syncthreads();  // temp is reused
  }
  if (threadIdx.x == 0) out[n] = carry;
  __syncthreads();
}

// The largest k in [lo, hi) with at(k) <= x, given at(lo) <= x < at(hi) and at non-decreasing.
template <class At>
__device__ int64_t last_at_or_below(int64_t x, int64_t lo, int64_t hi, At at) {
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (at(mid) <= x)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// ---- make_send_slots -----------------------------------------------------------------------

// One block. starts [E+1]: the exclusive prefix of n; counts[e]: kept rows; peak_rows[0]:
// max(itself, the most rows routed to one destination).
__global__ void send_prefix_kernel(const int64_t* __restrict__ n, int64_t destinations,
                                   int64_t local, int64_t slot_rows, int64_t* starts,
                                   int64_t* __restrict__ counts, int64_t* __restrict__ peak_rows) {
  using Reduce = cub::BlockReduce<int64_t, kThreads>;
  __shared__ union {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  } temp;
  const int64_t experts = destinations * local;
  block_exclusive_scan(
      experts, [&](int64_t e) { return n[e]; }, starts, temp.scan);
  for (int64_t e = threadIdx.x; e < experts; e += kThreads) {
    const int64_t routed_before = starts[e] - starts[e / local * local];
    const int64_t budget = slot_rows - routed_before;
    counts[e] = budget <= 0 ? 0 : (budget < n[e] ? budget : n[e]);
  }
  int64_t peak = 0;
  for (int64_t d = threadIdx.x; d < destinations; d += kThreads) {
    const int64_t routed = starts[(d + 1) * local] - starts[d * local];
    peak = routed > peak ? routed : peak;
  }
  peak = Reduce(temp.reduce).Reduce(peak, MaxOf());
  if (threadIdx.x == 0) peak_rows[0] = peak > peak_rows[0] ? peak : peak_rows[0];  // a running max
}

// Items [0, P*C) are send-slot rows, [P*C, P*C + R) permuted rows.
__global__ void send_fill_kernel(const int64_t* __restrict__ starts, int64_t destinations,
                                 int64_t local, int64_t slot_rows,
                                 int32_t* __restrict__ slot_to_row, int64_t num_rows,
                                 int32_t* __restrict__ row_to_slot) {
  const int64_t slot_total = destinations * slot_rows;
  const int64_t items = slot_total + num_rows;
  const int64_t total = starts[destinations * local];
  auto dest_start = [&](int64_t d) { return starts[d * local]; };
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < items;
       k += int64_t(gridDim.x) * blockDim.x) {
    if (k < slot_total) {
      const int64_t d = k / slot_rows, i = k % slot_rows;
      const int64_t first = dest_start(d);
      slot_to_row[k] = i < dest_start(d + 1) - first ? static_cast<int32_t>(first + i) : -1;
    } else {
      const int64_t r = k - slot_total;
      int32_t slot = -1;
      if (r < total) {
        const int64_t d = last_at_or_below(r, 0, destinations, dest_start);
        const int64_t i = r - dest_start(d);
        if (i < slot_rows) slot = static_cast<int32_t>(d * slot_rows + i);
      }
      row_to_slot[r] = slot;
    }
  }
}

// ---- make_received_slots -------------------------------------------------------------------

// One block. group [S*El+1]: G in [le][s] order; pre [S, El+1]: each source's row prefix;
// tokens_per_expert[le] = G(le+1, 0) - G(le, 0).
__global__ void received_prefix_kernel(const int64_t* __restrict__ c, int64_t sources,
                                       int64_t local, int64_t* group, int64_t* pre,
                                       int64_t* __restrict__ tokens_per_expert) {
  __shared__ typename Scan::TempStorage temp;
  const int64_t n = sources * local;
  // F (row-major) goes through `group` first, then G replaces it.
  block_exclusive_scan(
      n, [&](int64_t k) { return c[k]; }, group, temp);
  for (int64_t k = threadIdx.x; k < sources * (local + 1); k += kThreads) {
    const int64_t s = k / (local + 1), le = k % (local + 1);
    pre[k] = group[s * local + le] - group[s * local];
  }
  __syncthreads();  // F is read before G overwrites it
  block_exclusive_scan(
      n, [&](int64_t k) { return c[(k % sources) * local + k / sources]; }, group, temp);
  for (int64_t le = threadIdx.x; le < local; le += kThreads)
    tokens_per_expert[le] = group[(le + 1) * sources] - group[le * sources];
}

// Items [0, S*C) are received rows, [S*C, 2*S*C) expert-grouped rows.
__global__ void received_fill_kernel(const int64_t* __restrict__ group,
                                     const int64_t* __restrict__ pre, int64_t sources,
                                     int64_t local, int64_t slot_rows,
                                     int32_t* __restrict__ received_to_row,
                                     int32_t* __restrict__ row_to_received) {
  const int64_t rows = sources * slot_rows;
  const int64_t n = sources * local;
  const int64_t total = group[n];
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < 2 * rows;
       k += int64_t(gridDim.x) * blockDim.x) {
    if (k < rows) {
      const int64_t s = k / slot_rows, i = k % slot_rows;
      const int64_t* p = pre + s * (local + 1);
      int32_t row = -1;
      if (i < p[local]) {
        const int64_t le = last_at_or_below(i, 0, local, [&](int64_t j) { return p[j]; });
        row = static_cast<int32_t>(group[le * sources + s] + (i - p[le]));
      }
      received_to_row[k] = row;
    } else {
      const int64_t g = k - rows;
      int32_t received = -1;
      if (g < total) {
        const int64_t at = last_at_or_below(g, 0, n, [&](int64_t j) { return group[j]; });
        const int64_t le = at / sources, s = at % sources;
        received =
            static_cast<int32_t>(s * slot_rows + pre[s * (local + 1) + le] + (g - group[at]));
      }
      row_to_received[g] = received;
    }
  }
}

// ---- gather_rows ---------------------------------------------------------------------------

// dst row j = src row index[j] if 0 <= index[j] < src_rows, else zeros. W: the memory word.
template <class W>
__global__ void gather_index_rows_kernel(const W* __restrict__ src, int64_t src_rows,
                                         W* __restrict__ dst, int64_t num_rows,
                                         int64_t words_per_row, const int32_t* __restrict__ index,
                                         int threads_per_row) {
  const int64_t row =
      int64_t(blockIdx.x) * (blockDim.x / threads_per_row) + threadIdx.x / threads_per_row;
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  if (row >= num_rows) return;
  const int32_t from = index[row];
  W* out = dst + row * words_per_row;
  if (from < 0 || from >= src_rows) {
    const W zero{};
    for (int64_t c = lane; c < words_per_row; c += threads_per_row) out[c] = zero;
    return;
  }
  const W* in = src + int64_t(from) * words_per_row;
  for (int64_t c = lane; c < words_per_row; c += threads_per_row) out[c] = in[c];
}

}  // namespace

void make_send_slots_cuda(const Tensor& tokens_per_expert, int64_t destinations, int64_t slot_rows,
                          SendSlots& out) {
  const int64_t experts = tokens_per_expert.numel();
  const int64_t local = experts / destinations;
  const int64_t num_rows = out.row_to_slot.numel();
  cudaStream_t stream = cuda::stream_of(tokens_per_expert);
  Tensor starts = Tensor::empty({experts + 1}, DType::i64, tokens_per_expert.device());
  send_prefix_kernel<<<1, kThreads, 0, stream>>>(
      tokens_per_expert.data<int64_t>(), destinations, local, slot_rows, starts.data<int64_t>(),
      out.counts.data<int64_t>(), out.peak_rows.data<int64_t>());
  MOE_CUDA_CHECK_LAUNCH();
  const int64_t items = destinations * slot_rows + num_rows;
  if (items == 0) return;
  send_fill_kernel<<<cuda::blocks_for(items, kThreads), kThreads, 0, stream>>>(
      starts.data<int64_t>(), destinations, local, slot_rows, out.slot_to_row.data<int32_t>(),
      num_rows, out.row_to_slot.data<int32_t>());
  MOE_CUDA_CHECK_LAUNCH();
}

void make_received_slots_cuda(const Tensor& counts, int64_t slot_rows, ReceivedSlots& out) {
  const int64_t sources = counts.size(0), local = counts.size(1);
  cudaStream_t stream = cuda::stream_of(counts);
  // One scratch buffer: group [S*El+1], then pre [S*(El+1)].
  const int64_t group_size = sources * local + 1;
  Tensor scratch = Tensor::empty({group_size + sources * (local + 1)}, DType::i64, counts.device());
  int64_t* group = scratch.data<int64_t>();
  int64_t* pre = group + group_size;
  received_prefix_kernel<<<1, kThreads, 0, stream>>>(counts.data<int64_t>(), sources, local, group,
                                                     pre, out.tokens_per_expert.data<int64_t>());
  MOE_CUDA_CHECK_LAUNCH();
  const int64_t rows = sources * slot_rows;
  if (rows == 0) return;
  received_fill_kernel<<<cuda::blocks_for(2 * rows, kThreads), kThreads, 0, stream>>>(
      group, pre, sources, local, slot_rows, out.received_to_row.data<int32_t>(),
      out.row_to_received.data<int32_t>());
  MOE_CUDA_CHECK_LAUNCH();
}

void gather_rows_by_index_cuda(const Tensor& x, const Tensor& index, Tensor& out) {
  const int64_t rows = out.size(0);
  if (out.numel() == 0) return;
  const int64_t row_bytes = static_cast<int64_t>(out.nbytes()) / rows;
  cudaStream_t stream = cuda::stream_of(out);
  with_word(row_bytes, x.raw(), out.raw(), [&]<class W>() {
    const int64_t words = row_bytes / static_cast<int64_t>(sizeof(W));
    const RowLaunch launch = row_launch(rows, words);
    gather_index_rows_kernel<W><<<launch.blocks, kRowBlock, 0, stream>>>(
        static_cast<const W*>(x.raw()), x.size(0), static_cast<W*>(out.raw()), rows, words,
        index.data<int32_t>(), launch.threads_per_row);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::ops::detail
