// Helpers shared by the row-wise CUDA kernels of permute, swiglu and the elementwise ops (CUDA
// translation units only): packed loads and stores of whole 16-byte words, the compute type
// (fp32 for 16-bit storage types, fp64 for f64), and a launch shape that gives each row a
// power-of-two group of threads, so narrow rows (H = 259) and wide rows (H = 8192) both keep
// the GPU busy with coalesced accesses and a row's reduction needs no atomics.
#pragma once

#include <cstdint>
#include <type_traits>

#include "moe/core/cuda_utils.h"

namespace moe::ops::detail {

// ---- compute type ------------------------------------------------------------------------

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T>
__device__ __forceinline__ Acc<T> to_acc(const T& v) {
  if constexpr (std::is_same_v<T, double>)
    return v;
  else
    return cuda::load_float(&v);
}

template <class T>
__device__ __forceinline__ void from_acc(T& dst, Acc<T> v) {
  if constexpr (std::is_same_v<T, double>)
    dst = v;
  else
    cuda::store_float(&dst, v);
}

// ---- packed loads and stores ---------------------------------------------------------------

// Elements per 16-byte word: the vector width of a row kernel when the row allows it.
template <class T>
inline constexpr int kPack16 = static_cast<int>(16 / sizeof(T));

// N consecutive elements, aligned like the memory word(s) that move them.
template <class T, int N>
struct alignas(sizeof(T) * N >= 16 ? 16 : sizeof(T) * N) Pack {
  T v[N];
};

template <int Bytes>
struct WordOf;
template <>
struct WordOf<1> {
  using type = uint8_t;
};
template <>
struct WordOf<2> {
  using type = uint16_t;
};
template <>
struct WordOf<4> {
  using type = uint32_t;
};
template <>
struct WordOf<8> {
  using type = uint2;
};
template <>
struct WordOf<16> {
  using type = uint4;
};

// p must be aligned to alignof(Pack<T, N>).
template <int N, class T>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  Pack<T, N> r;
  constexpr int kBytes = static_cast<int>(sizeof(T)) * N;
  if constexpr (kBytes > 16) {
    static_assert(kBytes % 16 == 0);
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i)
      reinterpret_cast<uint4*>(&r)[i] = reinterpret_cast<const uint4*>(p)[i];
  } else {
    using W = typename WordOf<kBytes>::type;
    *reinterpret_cast<W*>(&r) = *reinterpret_cast<const W*>(p);
  }
  return r;
}

template <int N, class T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& v) {
  constexpr int kBytes = static_cast<int>(sizeof(T)) * N;
  if constexpr (kBytes > 16) {
    static_assert(kBytes % 16 == 0);
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i)
      reinterpret_cast<uint4*>(p)[i] = reinterpret_cast<const uint4*>(&v)[i];
  } else {
    using W = typename WordOf<kBytes>::type;
    *reinterpret_cast<W*>(p) = *reinterpret_cast<const W*>(&v);
  }
}

inline bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// A row copy's memory word: the widest (16, 8, 4, 2 or 1 bytes) that divides the row's bytes
// and aligns both base addresses; fn is called with that word type (rows as opaque bytes).
template <class Fn>
void with_word(int64_t row_bytes, const void* a, const void* b, Fn&& fn) {
  auto fits = [&](size_t w) {
    return row_bytes % static_cast<int64_t>(w) == 0 && aligned_to(a, w) && aligned_to(b, w);
  };
  if (fits(16))
    fn.template operator()<uint4>();
  else if (fits(8))
    fn.template operator()<uint2>();
  else if (fits(4))
    fn.template operator()<uint32_t>();
  else if (fits(2))
    fn.template operator()<uint16_t>();
  else
    fn.template operator()<uint8_t>();
}

// ---- row launch shape ------------------------------------------------------------------------

inline constexpr int kRowBlock = 256;

// threads_per_row: the smallest power of two >= the row's packs, clamped to [4, kRowBlock];
// rows_per_block = kRowBlock / threads_per_row. Row groups are aligned within warps, so a
// group's shuffles never cross into another row.
struct RowLaunch {
  int threads_per_row;
  int rows_per_block;
  unsigned blocks;
};

inline RowLaunch row_launch(int64_t rows, int64_t packs_per_row) {
  int tpr = 4;
  while (tpr < packs_per_row && tpr < kRowBlock) tpr *= 2;
  const int rpb = kRowBlock / tpr;
  const int64_t blocks = (rows + rpb - 1) / rpb;
  MOE_CHECK(blocks <= 0x7fffffffLL, "row kernel: ", rows, " rows is too many for one launch");
  return {tpr, rpb, static_cast<unsigned>(blocks < 1 ? 1 : blocks)};
}

// Sum of v over the threads_per_row threads of a row group, in a fixed order (deterministic);
// every thread of the group gets it. Every thread of the block must call it (it may
// __syncthreads when a row spans several warps); scratch: kRowBlock / 32 values of shared
// memory.
template <class A>
__device__ __forceinline__ A row_group_sum(A v, int threads_per_row, A* scratch) {
  const int lanes = threads_per_row < 32 ? threads_per_row : 32;
  for (int offset = lanes / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threads_per_row <= 32) return v;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  __syncthreads();  // the scratch may still be read from a previous call
  if (threadIdx.x % 32 == 0) scratch[warp] = v;
  __syncthreads();
  const int warps_per_row = threads_per_row / 32;
  const int first = (static_cast<int>(threadIdx.x) / threads_per_row) * warps_per_row;
  A total = 0;
  for (int w = 0; w < warps_per_row; ++w) total += scratch[first + w];
  return total;
}

}  // namespace moe::ops::detail
