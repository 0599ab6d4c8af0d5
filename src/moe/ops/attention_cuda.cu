// CUDA attention, FlashAttention-2 style, with fp32 FMA math (no tensor cores yet: this is the
// correct-first version; see the speed note below).
//
// Tiles. A tile is 32 query rows or 32 keys (one key per lane). A block has 8 warps; warp w owns
// the tile rows w, w + 8, w + 16, w + 24 (kRowsPerWarp = 4). Tiles of Q, K, V, dO are copied to
// shared memory as fp32 (rows past Sq or Sk become zeros, so the last partial tile needs no
// special path); K and V rows use an odd stride so that "lane j reads row j at column d" hits 32
// different banks.
//
// Causal mask with an offset (attention.h): query row i sees keys j <= i + o (o = causal_offset,
// clamped to Sk, so i + o stays an int). Query tiles start at multiples of 32 of the query
// sequence and key tiles at multiples of 32 of the key sequence; the block-skipping bounds come
// from the offset: the rows i0..i0+31 see keys below i0 + 32 + o (the forward's and dq's last key
// tile), and key j0 is seen by rows i >= j0 - o (the dk/dv pass's first query row, not
// necessarily a tile multiple). With Sq = Sk and o = 0 these are the plain causal bounds.
//
// Forward (one block per (query tile, query head, batch)): for each key tile up to the causal
// limit, lane j computes the scores of key j against the warp's 4 rows, a warp reduction gives
// the tile's row max and sum (online softmax: m, l rescaled by exp(m_old - m_new)), and the
// probabilities go through shared memory to the P V product, where lane c owns output columns
// c, c + 32, ... Output = acc / l; lse = m + log l.
//
// Backward, atomics-free and deterministic, in three kernels:
//   delta: Delta_i = <dout_i, out_i>, one warp per row (fp32 workspace [B, Hq, Sq]);
//   dk/dv: one block per (key tile, kv head, batch); it loops over the kv head's query heads and
//          the query rows that can see the key tile (causal: from j0 - o on, 32 at a time),
//          recomputes P and dS for the 32 x 32 pairs, and accumulates dk, dv in registers
//          (warp w owns keys 4w..4w+3, lanes own columns), so the GQA sum over query heads
//          needs no atomics; keys that no row sees get dk = dv = 0;
//   dq:    one block per (query tile, query head, batch), looping over key tiles like the
//          forward, recomputing P and dS again.
// Everything is computed in fp32 from the stored values (bf16 inputs are widened on load).
//
// Attention dropout (attention.h): the forward multiplies the probabilities that go to P V by
// c M_ij (the row sum l stays undropped); the backward's recomputation gives dv the dropped P
// and dS = P (c M_ij dP - Delta). M_ij is dropout.h's mask of the pair's global index (global
// head, query and key under tensor / context parallelism), the same bits as the CPU reference.
// Without dropout none of this code runs (a uniform branch).
//
// Speed to expect: this is CUDA-core FMA code whose inner loops issue about one shared-memory
// load per FMA, so it is bounded by shared-memory bandwidth at roughly 5-10 TFLOP/s on an H200:
// some 50x below cuDNN / FlashAttention-3 (tensor cores, wgmma). Shared memory per block is
// ~100 KB (forward) and ~137 KB (backward) at D = Dv = 256, ~40 / ~70 KB at D = Dv = 128. The
// next step is a tensor-core version (mma.sync on bf16 tiles kept in shared memory as bf16).
#include <cmath>

#include "moe/core/cuda_utils.h"
#include "moe/ops/attention_cuda.h"

namespace moe::ops::detail {
namespace {

constexpr int kTile = 32;  // rows or keys per tile: one key per lane
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kTile / kWarps;  // also keys per warp in the dk/dv pass
constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
struct Args {
  const T* q;
  const T* k;
  const T* v;
  const T* out;
  const T* dout;
  AttentionStrides qs, ks, vs, os;  // os: out and dout
  int q_seq;                        // Sq
  int kv_seq;                       // Sk
  int q_heads;
  int group;  // query heads per kv head
  int head_dim;
  int v_head_dim;
  float scale;
  bool causal;
  int causal_offset;  // o: row i sees keys j <= i + o (0 <= o <= Sk; 0 when not causal)
  // Dropout of the probabilities (drop false: none).
  bool drop;
  float drop_p;
  float drop_scale;  // 1 / (1 - p), 0 for p = 1
  uint64_t drop_key;
  int64_t drop_first_sample;
  // The global geometry of the mask index (dropout.h): heads_total and seq_total resolved.
  int64_t drop_head_offset;
  uint64_t drop_heads_total;
  int64_t drop_query_offset;
  int64_t drop_key_offset;
  uint64_t drop_seq_total;
};

__host__ __device__ constexpr int odd_stride(int n) {
  return n | 1;
}

__device__ __forceinline__ int64_t offset_of(const AttentionStrides& st, int64_t b, int t, int h) {
  return b * st.batch + int64_t(t) * st.token + int64_t(h) * st.head;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}

// dst[r * dst_stride + d] = src(b, t0 + r, h, d) as float for r < kTile, d < dim; zeros for
// rows t0 + r >= seq (the tensor's own sequence length). All threads of the block take part.
template <class T>
__device__ void load_tile(float* dst, int dst_stride, const T* src, const AttentionStrides& st,
                          int64_t b, int t0, int h, int seq, int dim) {
  for (int e = threadIdx.x; e < kTile * dim; e += blockDim.x) {
    const int r = e / dim;
    const int d = e - r * dim;
    const int t = t0 + r;
    dst[r * dst_stride + d] = t < seq ? cuda::load_float(src + offset_of(st, b, t, h) + d) : 0.0f;
  }
}

// Fills rows[r] = src[b, h, i0 + r] for r < kTile (zeros past seq = Sq): lse or Delta of a tile.
__device__ void load_row_stats(float* rows, const float* src, int64_t b, int h, int q_heads, int i0,
                               int seq) {
  if (threadIdx.x < kTile) {
    const int i = i0 + static_cast<int>(threadIdx.x);
    rows[threadIdx.x] = i < seq ? src[(b * q_heads + h) * int64_t(seq) + i] : 0.0f;
  }
}

// s[r] = <a[row_r], b[lane]> over `dim` columns, row_r = warp + kWarps * r: the warp's rows
// against this lane's key. a rows are read as broadcasts, b rows (odd stride) conflict-free.
__device__ __forceinline__ void tile_dots(float (&s)[kRowsPerWarp], const float* a, int a_stride,
                                          const float* b, int b_stride, int dim, int warp,
                                          int lane) {
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) s[r] = 0.0f;
  const float* b_row = b + lane * b_stride;
  for (int d = 0; d < dim; ++d) {
    const float bv = b_row[d];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
      s[r] = fmaf(a[(warp + kWarps * r) * a_stride + d], bv, s[r]);
  }
}

// Whether query row i sees key j (both local indices; false past Sq or Sk).
template <class T>
__device__ __forceinline__ bool visible(const Args<T>& a, int i, int j) {
  return i < a.q_seq && j < a.kv_seq && (!a.causal || j <= i + a.causal_offset);
}

// The end (exclusive) of the keys that query rows [i0, i0 + kTile) see: the key-tile loop bound
// of the forward and the dq pass.
template <class T>
__device__ __forceinline__ int key_end_for(const Args<T>& a, int i0) {
  if (!a.causal) return a.kv_seq;
  return static_cast<int>(min(int64_t(a.kv_seq), int64_t(i0) + kTile + a.causal_offset));
}

// c M_ij for query row i, key j of (b, h): 1 / (1 - p) when kept, 0 when dropped (dropout.h),
// drawn at the global index of the pair (the head, query and key offsets added).
template <class T>
__device__ __forceinline__ float drop_factor(const Args<T>& a, int64_t b, int h, int i, int j) {
  const uint64_t n =
      dropout_probs_index(a.drop_first_sample, a.drop_head_offset, a.drop_heads_total,
                          a.drop_query_offset, a.drop_key_offset, a.drop_seq_total, b, h, i, j);
  return dropout_keep(a.drop_key, n, a.drop_p) ? a.drop_scale : 0.0f;
}

// ---- forward --------------------------------------------------------------------------------

template <class T, int kCols>  // kCols: output columns per lane, ceil(Dv / 32)
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(Args<T> a, T* __restrict__ out, float* __restrict__ lse) {
  extern __shared__ float smem[];
  const int D = a.head_dim, Dv = a.v_head_dim;
  float* q_tile = smem;                            // [kTile][D]
  float* k_tile = q_tile + kTile * D;              // [kTile][odd(D)]
  float* v_tile = k_tile + kTile * odd_stride(D);  // [kTile][Dv]
  float* p_tile = v_tile + kTile * Dv;             // [kTile][kTile]

  // Reversed so the heaviest causal tiles start first.
  const int i0 = (static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x)) * kTile;
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int g = h / a.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  load_tile(q_tile, D, a.q, a.qs, b, i0, h, a.q_seq, D);

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kCols];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;
  }

  const int key_end = key_end_for(a, i0);
  for (int j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();  // the previous tile's K, V reads are done (and q_tile is written)
    load_tile(k_tile, odd_stride(D), a.k, a.ks, b, j0, g, a.kv_seq, D);
    load_tile(v_tile, Dv, a.v, a.vs, b, j0, g, a.kv_seq, Dv);
    __syncthreads();

    float s[kRowsPerWarp];
    tile_dots(s, q_tile, D, k_tile, odd_stride(D), D, warp, lane);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = warp + kWarps * r;
      const float x = visible(a, i0 + row, j0 + lane) ? s[r] * a.scale : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(x));
      // A row that has seen no visible key yet keeps m = -inf; measuring from 0 then gives
      // p = 0 and correction 0 instead of exp(-inf + inf) = NaN.
      const float ref = m_new == -INFINITY ? 0.0f : m_new;
      const float p = expf(x - ref);
      const float correction = expf(m[r] - ref);
      l[r] = l[r] * correction + warp_sum(p);
      m[r] = m_new;
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[r][c] *= correction;
      p_tile[row * kTile + lane] = a.drop ? p * drop_factor(a, b, h, i0 + row, j0 + lane) : p;
    }
    __syncwarp();  // this warp's p rows are written; only this warp reads them

    for (int jj = 0; jj < kTile; ++jj) {
      float vv[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int d = lane + 32 * c;
        vv[c] = d < Dv ? v_tile[jj * Dv + d] : 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float p = p_tile[(warp + kWarps * r) * kTile + jj];
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[r][c] = fmaf(p, vv[c], acc[r][c]);
      }
    }
    __syncwarp();  // p reads are done before the next tile overwrites p_tile
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = i0 + warp + kWarps * r;
    if (i >= a.q_seq) continue;
    const float inv = 1.0f / l[r];
    T* o = out + offset_of(a.os, b, i, h);
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int d = lane + 32 * c;
      if (d < Dv) cuda::store_float(o + d, acc[r][c] * inv);
    }
    if (lane == 0) lse[(b * a.q_heads + h) * int64_t(a.q_seq) + i] = m[r] + logf(l[r]);
  }
}

// ---- backward -------------------------------------------------------------------------------

// Delta_i = <dout_i, out_i>, one warp per row; rows in lse order [B, Hq, Sq].
template <class T>
__global__ void __launch_bounds__(kThreads)
    attention_delta_kernel(Args<T> a, int64_t rows, float* __restrict__ delta) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // uniform across the warp
  const int i = static_cast<int>(row % a.q_seq);
  const int64_t bh = row / a.q_seq;
  const int h = static_cast<int>(bh % a.q_heads);
  const int64_t b = bh / a.q_heads;
  const T* o = a.out + offset_of(a.os, b, i, h);
  const T* d_o = a.dout + offset_of(a.os, b, i, h);
  float sum = 0.0f;
  for (int d = lane; d < a.v_head_dim; d += 32)
    sum = fmaf(cuda::load_float(o + d), cuda::load_float(d_o + d), sum);
  sum = warp_sum(sum);
  if (lane == 0) delta[row] = sum;
}

// Shared-memory tiles of one (query tile, key tile) pair in the backward.
struct BackwardTiles {
  float* q;      // [kTile][D]
  float* dout;   // [kTile][Dv]
  float* k;      // [kTile][odd(D)]
  float* v;      // [kTile][odd(Dv)]
  float* p;      // [kTile][kTile]  P_ij (row i, key j)
  float* ds;     // [kTile][kTile]  dS_ij
  float* lse;    // [kTile]
  float* delta;  // [kTile]

  __device__ BackwardTiles(float* smem, int D, int Dv) {
    q = smem;
    dout = q + kTile * D;
    k = dout + kTile * Dv;
    v = k + kTile * odd_stride(D);
    p = v + kTile * odd_stride(Dv);
    ds = p + kTile * kTile;
    lse = ds + kTile * kTile;
    delta = lse + kTile;
  }
  static size_t bytes(int D, int Dv) {
    return sizeof(float) * size_t(kTile * D + kTile * Dv + kTile * odd_stride(D) +
                                  kTile * odd_stride(Dv) + 2 * kTile * kTile + 2 * kTile);
  }
};

// P_ij = exp(scale s_ij - lse_i) and dS_ij = P_ij (dP_ij - Delta_i) for the warp's rows and
// this lane's key, written to the p and ds tiles (zeros for pairs that are masked or out of
// range). With dropout the p tile holds the dropped P (dv's factor) and dS uses the dropped dP.
template <class T>
__device__ __forceinline__ void recompute_p_ds(const Args<T>& a, const BackwardTiles& t, int64_t b,
                                               int h, int i0, int j0, int warp, int lane) {
  float s[kRowsPerWarp], dp[kRowsPerWarp];
  tile_dots(s, t.q, a.head_dim, t.k, odd_stride(a.head_dim), a.head_dim, warp, lane);
  tile_dots(dp, t.dout, a.v_head_dim, t.v, odd_stride(a.v_head_dim), a.v_head_dim, warp, lane);
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = warp + kWarps * r;
    const bool on = visible(a, i0 + row, j0 + lane);
    const float p = on ? expf(s[r] * a.scale - t.lse[row]) : 0.0f;
    if (a.drop) {
      const float c = drop_factor(a, b, h, i0 + row, j0 + lane);
      t.p[row * kTile + lane] = p * c;
      t.ds[row * kTile + lane] = p * (dp[r] * c - t.delta[row]);
    } else {
      t.p[row * kTile + lane] = p;
      t.ds[row * kTile + lane] = p * (dp[r] - t.delta[row]);
    }
  }
}

// dk_j = scale sum_i dS_ij q_i and dv_j = sum_i P_ij dout_i over the query heads of kv head g.
template <class T, int kDCols, int kDvCols>
__global__ void __launch_bounds__(kThreads)
    attention_dkdv_kernel(Args<T> a, const float* __restrict__ lse, const float* __restrict__ delta,
                          T* __restrict__ dk, T* __restrict__ dv) {
  extern __shared__ float smem[];
  const int D = a.head_dim, Dv = a.v_head_dim;
  const BackwardTiles t(smem, D, Dv);
  const int j0 = static_cast<int>(blockIdx.x) * kTile;  // early key tiles see the most rows
  const int g = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  load_tile(t.k, odd_stride(D), a.k, a.ks, b, j0, g, a.kv_seq, D);
  load_tile(t.v, odd_stride(Dv), a.v, a.vs, b, j0, g, a.kv_seq, Dv);

  float dk_acc[kRowsPerWarp][kDCols], dv_acc[kRowsPerWarp][kDvCols];
#pragma unroll
  for (int c = 0; c < kRowsPerWarp; ++c) {
#pragma unroll
    for (int x = 0; x < kDCols; ++x) dk_acc[c][x] = 0.0f;
#pragma unroll
    for (int x = 0; x < kDvCols; ++x) dv_acc[c][x] = 0.0f;
  }

  // Rows before j0 - o see none of this tile's keys when causal (with o = 0 the row tiles start
  // at j0, aligned as before). Keys no row sees (j0 - o >= Sq) skip the loop: dk = dv = 0.
  const int first_row = a.causal ? max(0, j0 - a.causal_offset) : 0;
  for (int h = g * a.group; h < (g + 1) * a.group; ++h) {
    for (int i0 = first_row; i0 < a.q_seq; i0 += kTile) {
      __syncthreads();  // the previous pair's tiles are no longer read
      load_tile(t.q, D, a.q, a.qs, b, i0, h, a.q_seq, D);
      load_tile(t.dout, Dv, a.dout, a.os, b, i0, h, a.q_seq, Dv);
      load_row_stats(t.lse, lse, b, h, a.q_heads, i0, a.q_seq);
      load_row_stats(t.delta, delta, b, h, a.q_heads, i0, a.q_seq);
      __syncthreads();
      recompute_p_ds(a, t, b, h, i0, j0, warp, lane);
      __syncthreads();  // p, ds columns of every key are complete

      // Warp w owns keys kk = w * 4 + c; lanes own columns lane + 32 x.
      for (int row = 0; row < kTile; ++row) {
        float qv[kDCols], ov[kDvCols];
#pragma unroll
        for (int x = 0; x < kDCols; ++x) {
          const int d = lane + 32 * x;
          qv[x] = d < D ? t.q[row * D + d] : 0.0f;
        }
#pragma unroll
        for (int x = 0; x < kDvCols; ++x) {
          const int d = lane + 32 * x;
          ov[x] = d < Dv ? t.dout[row * Dv + d] : 0.0f;
        }
#pragma unroll
        for (int c = 0; c < kRowsPerWarp; ++c) {
          const int kk = warp * kRowsPerWarp + c;
          const float p = t.p[row * kTile + kk];
          const float ds = t.ds[row * kTile + kk];
#pragma unroll
          for (int x = 0; x < kDCols; ++x) dk_acc[c][x] = fmaf(ds, qv[x], dk_acc[c][x]);
#pragma unroll
          for (int x = 0; x < kDvCols; ++x) dv_acc[c][x] = fmaf(p, ov[x], dv_acc[c][x]);
        }
      }
    }
  }

#pragma unroll
  for (int c = 0; c < kRowsPerWarp; ++c) {
    const int j = j0 + warp * kRowsPerWarp + c;
    if (j >= a.kv_seq) continue;
    T* dk_row = dk + offset_of(a.ks, b, j, g);
    T* dv_row = dv + offset_of(a.vs, b, j, g);
#pragma unroll
    for (int x = 0; x < kDCols; ++x) {
      const int d = lane + 32 * x;
      if (d < D) cuda::store_float(dk_row + d, dk_acc[c][x] * a.scale);
    }
#pragma unroll
    for (int x = 0; x < kDvCols; ++x) {
      const int d = lane + 32 * x;
      if (d < Dv) cuda::store_float(dv_row + d, dv_acc[c][x]);
    }
  }
}

// dq_i = scale sum_j dS_ij k_j.
template <class T, int kDCols>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(Args<T> a, const float* __restrict__ lse, const float* __restrict__ delta,
                        T* __restrict__ dq) {
  extern __shared__ float smem[];
  const int D = a.head_dim, Dv = a.v_head_dim;
  const BackwardTiles t(smem, D, Dv);
  const int i0 = (static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x)) * kTile;
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int g = h / a.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  load_tile(t.q, D, a.q, a.qs, b, i0, h, a.q_seq, D);
  load_tile(t.dout, Dv, a.dout, a.os, b, i0, h, a.q_seq, Dv);
  load_row_stats(t.lse, lse, b, h, a.q_heads, i0, a.q_seq);
  load_row_stats(t.delta, delta, b, h, a.q_heads, i0, a.q_seq);

  float acc[kRowsPerWarp][kDCols];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int x = 0; x < kDCols; ++x) acc[r][x] = 0.0f;

  const int key_end = key_end_for(a, i0);
  for (int j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();  // previous K, V tiles are no longer read (and q, dout, stats are written)
    load_tile(t.k, odd_stride(D), a.k, a.ks, b, j0, g, a.kv_seq, D);
    load_tile(t.v, odd_stride(Dv), a.v, a.vs, b, j0, g, a.kv_seq, Dv);
    __syncthreads();
    recompute_p_ds(a, t, b, h, i0, j0, warp, lane);
    __syncwarp();  // this warp's ds rows are written; only this warp reads them

    for (int jj = 0; jj < kTile; ++jj) {
      float kv[kDCols];
#pragma unroll
      for (int x = 0; x < kDCols; ++x) {
        const int d = lane + 32 * x;
        kv[x] = d < D ? t.k[jj * odd_stride(D) + d] : 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float ds = t.ds[(warp + kWarps * r) * kTile + jj];
#pragma unroll
        for (int x = 0; x < kDCols; ++x) acc[r][x] = fmaf(ds, kv[x], acc[r][x]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = i0 + warp + kWarps * r;
    if (i >= a.q_seq) continue;
    T* dq_row = dq + offset_of(a.qs, b, i, h);
#pragma unroll
    for (int x = 0; x < kDCols; ++x) {
      const int d = lane + 32 * x;
      if (d < D) cuda::store_float(dq_row + d, acc[r][x] * a.scale);
    }
  }
}

// ---- launch helpers -------------------------------------------------------------------------

// Calls fn.template operator()<N>() with N = columns per lane for a head dim (<= 256).
template <class Fn>
void with_cols(int64_t dim, Fn&& fn) {
  if (dim <= 64)
    fn.template operator()<2>();
  else if (dim <= 128)
    fn.template operator()<4>();
  else
    fn.template operator()<8>();
}

template <class T>
Args<T> make_args(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                  const Tensor* out, const Tensor* dout) {
  Args<T> a{};
  a.q = q.data<T>();
  a.k = k.data<T>();
  a.v = v.data<T>();
  a.out = out != nullptr ? out->data<T>() : nullptr;
  a.dout = dout != nullptr ? dout->data<T>() : nullptr;
  a.qs = s.q_strides();
  a.ks = s.k_strides();
  a.vs = s.v_strides();
  a.os = s.out_strides();
  a.q_seq = static_cast<int>(s.q_seq);
  a.kv_seq = static_cast<int>(s.kv_seq);
  a.q_heads = static_cast<int>(s.q_heads);
  a.group = static_cast<int>(s.group());
  a.head_dim = static_cast<int>(s.head_dim);
  a.v_head_dim = static_cast<int>(s.v_head_dim);
  a.scale = static_cast<float>(s.scale);
  a.causal = s.causal;
  a.causal_offset = static_cast<int>(s.causal_offset);  // <= Sk (attention_cuda.h)
  a.drop = s.dropout.active();
  a.drop_p = static_cast<float>(s.dropout.p);
  a.drop_scale = s.dropout.p >= 1.0 ? 0.0f : static_cast<float>(1.0 / (1.0 - s.dropout.p));
  a.drop_key = s.dropout.key;
  a.drop_first_sample = s.dropout.first_sample;
  a.drop_head_offset = s.dropout.head_offset;
  a.drop_heads_total = static_cast<uint64_t>(s.dropout.global_heads(s.q_heads));
  a.drop_query_offset = s.dropout.query_offset;
  a.drop_key_offset = s.dropout.key_offset;
  a.drop_seq_total = static_cast<uint64_t>(s.dropout_seq_total());
  return a;
}

void check_grid(const AttentionShape& s) {
  // i + causal_offset < Sq + Sk <= 2^31 stays an int.
  MOE_CHECK(s.q_seq <= (int64_t(1) << 30) && s.kv_seq <= (int64_t(1) << 30),
            "attention (CUDA): sequence lengths Sq = ", s.q_seq, ", Sk = ", s.kv_seq,
            " are too long for the int tile indices");
  MOE_CHECK(s.q_heads <= 65535 && s.batch <= 65535, "attention (CUDA): at most 65535 heads and ",
            "65535 sequences per call, got Hq = ", s.q_heads, ", B = ", s.batch);
}

// Launches `kernel` with `smem` bytes of dynamic shared memory (opting in above 48 KB).
template <class Kernel, class... Params>
void launch(Kernel kernel, dim3 grid, size_t smem, cudaStream_t stream, Params... params) {
  MOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem)));
  kernel<<<grid, kThreads, smem, stream>>>(params...);
  MOE_CUDA_CHECK_LAUNCH();
}

unsigned tiles(int64_t seq) {
  return static_cast<unsigned>((seq + kTile - 1) / kTile);
}

}  // namespace

void attention_forward_cuda(const AttentionShape& shape, const Tensor& q, const Tensor& k,
                            const Tensor& v, Tensor& out, Tensor& lse) {
  if (shape.batch == 0 || shape.q_seq == 0) return;
  check_grid(shape);
  cudaStream_t stream = cuda::stream_of(q);
  const int D = static_cast<int>(shape.head_dim), Dv = static_cast<int>(shape.v_head_dim);
  const size_t smem =
      sizeof(float) * size_t(kTile * D + kTile * odd_stride(D) + kTile * Dv + kTile * kTile);
  const dim3 grid(tiles(shape.q_seq), static_cast<unsigned>(shape.q_heads),
                  static_cast<unsigned>(shape.batch));
  dispatch<DType::f32, DType::bf16>(q.dtype(), "attention_forward (CUDA)", [&]<class T>() {
    const Args<T> args = make_args<T>(shape, q, k, v, nullptr, nullptr);
    with_cols(Dv, [&]<int kCols>() {
      launch(attention_forward_kernel<T, kCols>, grid, smem, stream, args, out.data<T>(),
             lse.data<float>());
    });
  });
}

void attention_backward_cuda(const AttentionShape& shape, const Tensor& grad_out, const Tensor& q,
                             const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             Tensor& dq, Tensor& dk, Tensor& dv) {
  // No query row: the caller hands back zero dk, dv (attention_cpu.cpp).
  if (shape.batch == 0 || shape.q_seq == 0) return;
  check_grid(shape);
  cudaStream_t stream = cuda::stream_of(q);
  const int D = static_cast<int>(shape.head_dim), Dv = static_cast<int>(shape.v_head_dim);
  const int64_t rows = shape.batch * shape.q_heads * shape.q_seq;
  Tensor delta = Tensor::empty({shape.batch, shape.q_heads, shape.q_seq}, DType::f32, q.device());
  const size_t smem = BackwardTiles::bytes(D, Dv);
  dispatch<DType::f32, DType::bf16>(q.dtype(), "attention_backward (CUDA)", [&]<class T>() {
    const Args<T> args = make_args<T>(shape, q, k, v, &out, &grad_out);
    const auto delta_blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
    attention_delta_kernel<T>
        <<<delta_blocks, kThreads, 0, stream>>>(args, rows, delta.data<float>());
    MOE_CUDA_CHECK_LAUNCH();
    with_cols(D, [&]<int kDCols>() {
      with_cols(Dv, [&]<int kDvCols>() {
        const dim3 grid(tiles(shape.kv_seq), static_cast<unsigned>(shape.kv_heads),
                        static_cast<unsigned>(shape.batch));
        launch(attention_dkdv_kernel<T, kDCols, kDvCols>, grid, smem, stream, args,
               lse.data<float>(), static_cast<const float*>(delta.data<float>()), dk.data<T>(),
               dv.data<T>());
      });
      const dim3 grid(tiles(shape.q_seq), static_cast<unsigned>(shape.q_heads),
                      static_cast<unsigned>(shape.batch));
      launch(attention_dq_kernel<T, kDCols>, grid, smem, stream, args, lse.data<float>(),
             static_cast<const float*>(delta.data<float>()), dq.data<T>());
    });
  });
}

}  // namespace moe::ops::detail
