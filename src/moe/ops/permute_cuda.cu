// CUDA row movement of the token permutation. Every kernel is one pass over its rows with a
// group of threads per row (row_launch): gathers copy whole 16-byte words when the row allows
// it (any dtype: rows are bytes), the per-token sums load 16-byte packs and add a token's K
// rows in slot order in fp32 (fp64 for f64) - a gather per token, so deterministic and free of
// atomics. Chunk sorting is a batched copy of contiguous byte ranges.
#include "moe/core/cuda_utils.h"
#include "moe/ops/permute_cuda.h"
#include "moe/ops/row_kernels_cuda.cuh"

namespace moe::ops::detail {
namespace {

// dst row r = src row (row_to_slot[r] / topk), or zeros for a padding row. W: the memory word.
template <class W, class P>
__global__ void gather_rows_kernel(const W* __restrict__ src, W* __restrict__ dst, int64_t num_rows,
                                   int64_t words_per_row, const int32_t* __restrict__ row_to_slot,
                                   int64_t topk, int threads_per_row, const P* __restrict__ probs,
                                   P* __restrict__ probs_out) {
  const int64_t row =
      int64_t(blockIdx.x) * (blockDim.x / threads_per_row) + threadIdx.x / threads_per_row;
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  if (row >= num_rows) return;
  const int32_t slot = row_to_slot[row];
  W* out = dst + row * words_per_row;
  if (slot < 0) {
    const W zero{};
    for (int64_t c = lane; c < words_per_row; c += threads_per_row) out[c] = zero;
    if (probs_out != nullptr && lane == 0) probs_out[row] = P(0);
    return;
  }
  const W* in = src + (slot / topk) * words_per_row;
  for (int64_t c = lane; c < words_per_row; c += threads_per_row) out[c] = in[c];
  if (probs_out != nullptr && lane == 0) probs_out[row] = probs[slot];
}

// dst row t = sum_j src row slot_to_row[t*topk + j] over the kept slots, j ascending.
template <class T, int N, class P>
__global__ void sum_slot_rows_kernel(const T* __restrict__ src, T* __restrict__ dst,
                                     int64_t num_tokens, int64_t cols,
                                     const int32_t* __restrict__ slot_to_row, int64_t topk,
                                     int threads_per_row, const P* __restrict__ grad_probs_perm,
                                     P* __restrict__ grad_probs) {
  const int64_t token =
      int64_t(blockIdx.x) * (blockDim.x / threads_per_row) + threadIdx.x / threads_per_row;
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  if (token >= num_tokens) return;
  const int32_t* rows = slot_to_row + token * topk;
  T* out = dst + token * cols;
  for (int64_t c = int64_t(lane) * N; c < cols; c += int64_t(threads_per_row) * N) {
    Acc<T> acc[N];
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = 0;
    for (int64_t j = 0; j < topk; ++j) {
      const int32_t r = rows[j];
      if (r < 0) continue;
      const Pack<T, N> v = load_pack<N>(src + int64_t(r) * cols + c);
#pragma unroll
      for (int i = 0; i < N; ++i) acc[i] += to_acc(v.v[i]);
    }
    Pack<T, N> o;
#pragma unroll
    for (int i = 0; i < N; ++i) from_acc(o.v[i], acc[i]);
    store_pack<N>(out + c, o);
  }
  if (grad_probs != nullptr) {
    for (int64_t j = lane; j < topk; j += threads_per_row) {
      const int32_t r = rows[j];
      grad_probs[token * topk + j] = r >= 0 ? grad_probs_perm[r] : P(0);
    }
  }
}

// Calls fn.template operator()<P>() with P the probs' C++ type (float when undefined).
template <class Fn>
void with_probs_type(const Tensor& probs, const char* what, Fn&& fn) {
  if (!probs.defined()) return fn.template operator()<float>();
  dispatch<DType::f32, DType::f64>(probs.dtype(), what, std::forward<Fn>(fn));
}

template <class P>
const P* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<P>() : nullptr;
}

constexpr int kMaxChunksPerLaunch = 128;  // keeps the kernel argument under 4 KiB

struct ChunkBatch {
  int64_t src_offset[kMaxChunksPerLaunch];
  int64_t dst_offset[kMaxChunksPerLaunch];
  int64_t words[kMaxChunksPerLaunch];
};

// blockIdx.y picks the chunk; offsets are in words.
template <class W>
__global__ void copy_chunks_kernel(const W* __restrict__ src, W* __restrict__ dst,
                                   ChunkBatch batch) {
  const int c = blockIdx.y;
  const W* in = src + batch.src_offset[c];
  W* out = dst + batch.dst_offset[c];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < batch.words[c];
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = in[i];
}

constexpr int kCopyThreads = 256;

}  // namespace

void gather_rows_cuda(const Tensor& src, const Tensor& probs, const Tensor& row_to_slot,
                      int64_t topk, Tensor& dst, Tensor& probs_out) {
  const int64_t rows = dst.size(0);
  if (rows == 0) return;
  const int64_t row_bytes = static_cast<int64_t>(dst.nbytes()) / rows;
  cudaStream_t stream = cuda::stream_of(dst);
  with_probs_type(probs, "permute (probs)", [&]<class P>() {
    with_word(row_bytes, src.raw(), dst.raw(), [&]<class W>() {
      const int64_t words = row_bytes / static_cast<int64_t>(sizeof(W));
      const RowLaunch launch = row_launch(rows, words);
      gather_rows_kernel<W, P><<<launch.blocks, kRowBlock, 0, stream>>>(
          static_cast<const W*>(src.raw()), static_cast<W*>(dst.raw()), rows, words,
          row_to_slot.data<int32_t>(), topk, launch.threads_per_row, ptr_or_null<P>(probs),
          probs_out.defined() ? probs_out.data<P>() : nullptr);
      MOE_CUDA_CHECK_LAUNCH();
    });
  });
}

void sum_slot_rows_cuda(const Tensor& src, const Tensor& grad_probs_perm, const Tensor& slot_to_row,
                        int64_t topk, Tensor& dst, Tensor& grad_probs) {
  const int64_t tokens = dst.size(0);
  if (tokens == 0) return;
  const int64_t cols = dst.size(1);
  cudaStream_t stream = cuda::stream_of(dst);
  dispatch_float(src.dtype(), "unpermute / permute_backward", [&]<class T>() {
    with_probs_type(grad_probs_perm, "permute_backward (probs)", [&]<class P>() {
      auto launch_with = [&]<int N>() {
        const RowLaunch launch = row_launch(tokens, (cols + N - 1) / N);
        sum_slot_rows_kernel<T, N, P><<<launch.blocks, kRowBlock, 0, stream>>>(
            src.data<T>(), dst.data<T>(), tokens, cols, slot_to_row.data<int32_t>(), topk,
            launch.threads_per_row, ptr_or_null<P>(grad_probs_perm),
            grad_probs.defined() ? grad_probs.data<P>() : nullptr);
        MOE_CUDA_CHECK_LAUNCH();
      };
      constexpr int kN = kPack16<T>;
      if (cols % kN == 0 && aligned_to(src.raw(), 16) && aligned_to(dst.raw(), 16))
        launch_with.template operator()<kN>();
      else
        launch_with.template operator()<1>();
    });
  });
}

void copy_chunks_cuda(const Tensor& src, const std::vector<ChunkCopy>& chunks, Tensor& dst) {
  if (chunks.empty()) return;
  cudaStream_t stream = cuda::stream_of(dst);
  // One word size for all chunks: the widest dividing every offset, size and base address.
  int64_t common = 0;
  for (const ChunkCopy& c : chunks) common |= c.src_offset | c.dst_offset | c.bytes;
  const int64_t row_like = common == 0 ? 16 : (common & -common);  // lowest set bit
  with_word(row_like, src.raw(), dst.raw(), [&]<class W>() {
    constexpr int64_t kWord = sizeof(W);
    for (size_t first = 0; first < chunks.size(); first += kMaxChunksPerLaunch) {
      const size_t count = std::min<size_t>(kMaxChunksPerLaunch, chunks.size() - first);
      ChunkBatch batch{};
      int64_t max_words = 0;
      for (size_t i = 0; i < count; ++i) {
        const ChunkCopy& c = chunks[first + i];
        batch.src_offset[i] = c.src_offset / kWord;
        batch.dst_offset[i] = c.dst_offset / kWord;
        batch.words[i] = c.bytes / kWord;
        max_words = std::max(max_words, batch.words[i]);
      }
      if (max_words == 0) continue;
      const dim3 grid(cuda::blocks_for(max_words, kCopyThreads, 1024),
                      static_cast<unsigned>(count));
      copy_chunks_kernel<W><<<grid, kCopyThreads, 0, stream>>>(static_cast<const W*>(src.raw()),
                                                               static_cast<W*>(dst.raw()), batch);
      MOE_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace moe::ops::detail
