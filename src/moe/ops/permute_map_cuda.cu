// CUDA index work of the token permutation: the permutation map (a stable counting sort of the
// slots by expert) and the capacity dropping, with no host sync.
//
// Both need the stable rank of each slot among the slots of its expert,
//   rank(i) = #{i' < i : key(i') == key(i)},
// computed in three passes over tiles of kTile consecutive slots (deterministic, no global
// atomics, one read of the keys per pass):
//   1. tile_histogram: counts[tile][e], a shared-memory histogram per tile;
//   2. tile_offsets:   one block per expert scans its column over the tiles (CUB BlockScan):
//                      offsets[tile][e] = sum of the counts of the earlier tiles, totals[e];
//   3. tile_rank:      each tile walks its slots in order, 256 at a time; a warp finds its
//                      lanes with equal keys with __match_any_sync (rank within the warp = the
//                      equal lanes below), and the 8 warps take turns on a shared running count
//                      per expert, so ranks follow slot order exactly.
// The map also needs each expert's first row: one block scans the (padded) per-expert rows.
// Dropping by probs first sorts the slots by prob, descending (CUB's radix sort is stable, so
// equal probs keep ascending slot order), then ranks in that order.
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include "moe/core/cuda_utils.h"
#include "moe/ops/permute_cuda.h"

namespace moe::ops::detail {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 2048;            // slots per tile: 8 rounds of 256
constexpr int64_t kMaxExperts = 8192;  // per-expert counters live in shared memory (4 B each)

// Keys outside [0, E) (dropped slots; or invalid ids, which the device cannot report without a
// sync) take no row.
__device__ __forceinline__ int valid_key(int32_t key, int num_experts) {
  return (key >= 0 && key < num_experts) ? key : -1;
}

__global__ void tile_histogram_kernel(const int32_t* __restrict__ keys, int64_t n, int num_experts,
                                      int32_t* __restrict__ counts) {
  extern __shared__ int32_t hist[];
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  const int64_t begin = int64_t(blockIdx.x) * kTile;
  const int64_t end = min(n, begin + kTile);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int key = valid_key(keys[i], num_experts);
    if (key >= 0) atomicAdd(&hist[key], 1);
  }
  __syncthreads();
  int32_t* out = counts + int64_t(blockIdx.x) * num_experts;
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) out[e] = hist[e];
}

// In place, one block per expert e: counts[tile][e] -> exclusive prefix sum over the tiles;
// totals[e] = the column's sum (slots of expert e).
__global__ void tile_offsets_kernel(int32_t* __restrict__ counts, int64_t num_tiles,
                                    int num_experts, int32_t* __restrict__ totals) {
  using Scan = cub::BlockScan<int32_t, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int e = blockIdx.x;
  int32_t carry = 0;
  for (int64_t start = 0; start < num_tiles; start += kThreads) {
    const int64_t tile = start + threadIdx.x;
    const int32_t v = tile < num_tiles ? counts[tile * num_experts + e] : 0;
    int32_t prefix, sum;
    Scan(temp).ExclusiveSum(v, prefix, sum);
    if (tile < num_tiles) counts[tile * num_experts + e] = carry + prefix;
    carry += sum;
    __syncthreads();  // temp is reused
  }
  if (threadIdx.x == 0) totals[e] = carry;
}

// One block: rows_e = capacity_rows when padding to capacity, else round_up(totals[e],
// pad_multiple); tokens_per_expert[e] = rows_e; row_start[e] = rows of the experts before e.
__global__ void expert_rows_kernel(const int32_t* __restrict__ totals, int num_experts,
                                   int64_t pad_multiple, int64_t capacity_rows,
                                   int64_t* __restrict__ tokens_per_expert,
                                   int64_t* __restrict__ row_start) {
  using Scan = cub::BlockScan<int64_t, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  int64_t carry = 0;
  for (int start = 0; start < num_experts; start += kThreads) {
    const int e = start + static_cast<int>(threadIdx.x);
    int64_t rows = 0;
    if (e < num_experts) {
      rows = capacity_rows > 0 ? capacity_rows
                               : (totals[e] + pad_multiple - 1) / pad_multiple * pad_multiple;
    }
    int64_t prefix, sum;
    Scan(temp).ExclusiveSum(rows, prefix, sum);
    if (e < num_experts) {
      tokens_per_expert[e] = rows;
      row_start[e] = carry + prefix;
    }
    carry += sum;
    __syncthreads();
  }
}

// Pass 3. Every thread of the block runs the same number of rounds (the match and the barriers
// need all of them); epilogue(i, key, rank) is called once per slot i < n.
template <class Epilogue>
__global__ void tile_rank_kernel(const int32_t* __restrict__ keys, int64_t n, int num_experts,
                                 const int32_t* __restrict__ offsets, Epilogue epilogue) {
  extern __shared__ int32_t running[];
  const int64_t tile = blockIdx.x;
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x)
    running[e] = offsets[tile * num_experts + e];
  __syncthreads();
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const unsigned lower_lanes = (1u << lane) - 1u;
  const int64_t end = min(n, (tile + 1) * kTile);
  for (int64_t base = tile * kTile; base < end; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    const int key = i < n ? valid_key(keys[i], num_experts) : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, key);
    const int rank_in_warp = __popc(peers & lower_lanes);
    int rank = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (warp == w && key >= 0) rank = running[key] + rank_in_warp;
      __syncwarp();  // the group has read the count before its lowest lane advances it
      if (warp == w && key >= 0 && rank_in_warp == 0) running[key] += __popc(peers);
      __syncthreads();
    }
    if (i < n) epilogue(i, key, rank);
  }
}

struct MapEpilogue {
  const int64_t* row_start;
  int64_t kept_capacity;  // 0 = unbounded
  int32_t* slot_to_row;
  int32_t* row_to_slot;
  __device__ void operator()(int64_t slot, int key, int rank) const {
    int32_t row = -1;
    if (key >= 0 && (kept_capacity == 0 || rank < kept_capacity)) {
      row = static_cast<int32_t>(row_start[key] + rank);
      row_to_slot[row] = static_cast<int32_t>(slot);
    }
    slot_to_row[slot] = row;
  }
};

struct DropEpilogue {
  const int32_t* order;  // ranked position -> slot; nullptr: the identity
  int64_t capacity;
  int32_t* out;
  __device__ void operator()(int64_t i, int key, int rank) const {
    const int64_t slot = order ? order[i] : i;
    out[slot] = (key >= 0 && rank < capacity) ? key : -1;
  }
};

__global__ void iota_kernel(int32_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = static_cast<int32_t>(i);
}

__global__ void gather_ids_kernel(const int32_t* __restrict__ ids,
                                  const int32_t* __restrict__ order, int32_t* __restrict__ out,
                                  int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = ids[order[i]];
}

// Passes 1 and 2 over `keys`; the offsets then feed pass 3.
struct TileCounts {
  Tensor offsets;  // [num_tiles * E] i32
  Tensor totals;   // [E] i32
  int64_t num_tiles = 0;
};

TileCounts count_tiles(const int32_t* keys, int64_t n, int num_experts, Device device,
                       cudaStream_t stream) {
  TileCounts c;
  c.num_tiles = (n + kTile - 1) / kTile;
  c.offsets = Tensor::empty({std::max<int64_t>(c.num_tiles * num_experts, 1)}, DType::i32, device);
  c.totals = Tensor::empty({num_experts}, DType::i32, device);
  const size_t smem = sizeof(int32_t) * static_cast<size_t>(num_experts);
  if (c.num_tiles > 0) {
    tile_histogram_kernel<<<static_cast<unsigned>(c.num_tiles), kThreads, smem, stream>>>(
        keys, n, num_experts, c.offsets.data<int32_t>());
    MOE_CUDA_CHECK_LAUNCH();
  }
  tile_offsets_kernel<<<static_cast<unsigned>(num_experts), kThreads, 0, stream>>>(
      c.offsets.data<int32_t>(), c.num_tiles, num_experts, c.totals.data<int32_t>());
  MOE_CUDA_CHECK_LAUNCH();
  return c;
}

template <class Epilogue>
void rank_tiles(const int32_t* keys, int64_t n, int num_experts, const TileCounts& c,
                const Epilogue& epilogue, cudaStream_t stream) {
  if (c.num_tiles == 0) return;
  const size_t smem = sizeof(int32_t) * static_cast<size_t>(num_experts);
  tile_rank_kernel<<<static_cast<unsigned>(c.num_tiles), kThreads, smem, stream>>>(
      keys, n, num_experts, c.offsets.data<int32_t>(), epilogue);
  MOE_CUDA_CHECK_LAUNCH();
}

void check_sizes(int64_t n, int64_t num_experts, const char* op) {
  MOE_CHECK(num_experts <= kMaxExperts, op, ": at most ", kMaxExperts,
            " experts on CUDA (shared-memory counters), got ", num_experts);
  MOE_CHECK(n < (int64_t(1) << 31), op, ": ", n, " slots do not fit the i32 indices");
}

}  // namespace

void make_permute_map_cuda(const Tensor& expert_ids, int64_t num_experts, int64_t pad_multiple,
                           int64_t capacity_rows, int64_t kept_capacity, PermuteMap& map) {
  const int64_t n = expert_ids.numel();
  check_sizes(n, num_experts, "make_permute_map");
  const int experts = static_cast<int>(num_experts);
  const Device device = expert_ids.device();
  cudaStream_t stream = cuda::stream_of(expert_ids);
  const int32_t* keys = expert_ids.data<int32_t>();

  TileCounts counts = count_tiles(keys, n, experts, device, stream);
  Tensor row_start = Tensor::empty({num_experts}, DType::i64, device);
  expert_rows_kernel<<<1, kThreads, 0, stream>>>(
      counts.totals.data<int32_t>(), experts, pad_multiple, capacity_rows,
      map.tokens_per_expert.data<int64_t>(), row_start.data<int64_t>());
  MOE_CUDA_CHECK_LAUNCH();
  // Every row starts as padding (-1: all bytes 0xff); pass 3 fills in the kept slots' rows.
  if (map.row_to_slot.numel() > 0) {
    MOE_CUDA_CHECK(cudaMemsetAsync(map.row_to_slot.raw(), 0xff, map.row_to_slot.nbytes(), stream));
  }
  const MapEpilogue epilogue{row_start.data<int64_t>(), kept_capacity,
                             map.slot_to_row.data<int32_t>(), map.row_to_slot.data<int32_t>()};
  rank_tiles(keys, n, experts, counts, epilogue, stream);
}

void drop_over_capacity_cuda(const Tensor& expert_ids, const Tensor& probs, int64_t num_experts,
                             int64_t capacity, DropPolicy policy, Tensor& out) {
  const int64_t n = expert_ids.numel();
  if (n == 0) return;
  check_sizes(n, num_experts, "drop_over_capacity");
  const int experts = static_cast<int>(num_experts);
  const Device device = expert_ids.device();
  cudaStream_t stream = cuda::stream_of(expert_ids);
  const int32_t* ids = expert_ids.data<int32_t>();

  if (policy == DropPolicy::position) {
    TileCounts counts = count_tiles(ids, n, experts, device, stream);
    rank_tiles(ids, n, experts, counts, DropEpilogue{nullptr, capacity, out.data<int32_t>()},
               stream);
    return;
  }
  // Policy probs: order = the slots by prob, descending, ties in ascending slot order.
  Tensor iota = Tensor::empty({n}, DType::i32, device);
  Tensor order = Tensor::empty({n}, DType::i32, device);
  iota_kernel<<<cuda::blocks_for(n, kThreads), kThreads, 0, stream>>>(iota.data<int32_t>(), n);
  MOE_CUDA_CHECK_LAUNCH();
  dispatch<DType::f32, DType::f64>(probs.dtype(), "drop_over_capacity (probs)", [&]<class P>() {
    Tensor sorted_probs = Tensor::empty({n}, probs.dtype(), device);
    const int items = static_cast<int>(n);
    size_t temp_bytes = 0;
    MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(
        nullptr, temp_bytes, probs.data<P>(), sorted_probs.data<P>(), iota.data<int32_t>(),
        order.data<int32_t>(), items, 0, static_cast<int>(sizeof(P) * 8), stream));
    Tensor temp =
        Tensor::empty({static_cast<int64_t>(std::max<size_t>(temp_bytes, 1))}, DType::u8, device);
    MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(
        temp.raw(), temp_bytes, probs.data<P>(), sorted_probs.data<P>(), iota.data<int32_t>(),
        order.data<int32_t>(), items, 0, static_cast<int>(sizeof(P) * 8), stream));
  });
  Tensor sorted_ids = Tensor::empty({n}, DType::i32, device);
  gather_ids_kernel<<<cuda::blocks_for(n, kThreads), kThreads, 0, stream>>>(
      ids, order.data<int32_t>(), sorted_ids.data<int32_t>(), n);
  MOE_CUDA_CHECK_LAUNCH();
  TileCounts counts = count_tiles(sorted_ids.data<int32_t>(), n, experts, device, stream);
  rank_tiles(sorted_ids.data<int32_t>(), n, experts, counts,
             DropEpilogue{order.data<int32_t>(), capacity, out.data<int32_t>()}, stream);
}

}  // namespace moe::ops::detail
