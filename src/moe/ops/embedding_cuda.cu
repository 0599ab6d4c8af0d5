// CUDA embedding lookup. Forward: a group of threads per token copies its row in 16-byte words
// (or zeros it), counting out-of-range ids without a host sync. Backward: a stable radix sort of
// (local id, token) pairs, then one block per distinct id sums that id's dy rows in token order
// and adds the sum to dW: deterministic, no float atomics.
#include <algorithm>
#include <cstdio>
#include <cub/device/device_radix_sort.cuh>
#include <initializer_list>

#include "moe/core/cuda_utils.h"
#include "moe/ops/embedding_cuda.h"
#include "moe/ops/row_kernels_cuda.cuh"

namespace moe::ops::detail {
namespace {

// Set by the first out-of-range id any embedding kernel of this process sees: it prints once.
__device__ unsigned int g_embedding_reported_bad_id = 0;

__device__ void report_bad_id(int64_t token, int64_t id, int64_t vocab_size,
                              int32_t* invalid_count) {
  if (invalid_count != nullptr) atomicAdd(invalid_count, 1);  // integer: order-independent
  if (atomicCAS(&g_embedding_reported_bad_id, 0u, 1u) == 0u)
    printf(
        "moe::ops::embedding_forward: token %lld has id %lld, outside the vocabulary [0, %lld) "
        "(a zero row is used; further bad ids are counted, not printed)\n",
        static_cast<long long>(token), static_cast<long long>(id),
        static_cast<long long>(vocab_size));
}

// Row copies move whole words: W bytes (16 when aligned, else the element size).
template <class Word>
__global__ void embedding_forward_kernel(const void* __restrict__ ids_raw, bool ids_i64,
                                         const Word* __restrict__ weight, Word* __restrict__ y,
                                         int64_t tokens, int64_t words_per_row, int64_t vocab_start,
                                         int64_t vocab_end, int64_t vocab_size,
                                         int32_t* invalid_count, int threads_per_row) {
  const int64_t token =
      int64_t(blockIdx.x) * (blockDim.x / threads_per_row) + threadIdx.x / threads_per_row;
  const int lane = static_cast<int>(threadIdx.x) % threads_per_row;
  if (token >= tokens) return;
  const int64_t id = ids_i64 ? static_cast<const int64_t*>(ids_raw)[token]
                             : static_cast<int64_t>(static_cast<const int32_t*>(ids_raw)[token]);
  if (lane == 0 && (id < 0 || id >= vocab_size))
    report_bad_id(token, id, vocab_size, invalid_count);
  Word* dst = y + token * words_per_row;
  if (id >= vocab_start && id < vocab_end) {
    const Word* src = weight + (id - vocab_start) * words_per_row;
    for (int64_t c = lane; c < words_per_row; c += threads_per_row) dst[c] = src[c];
  } else {
    for (int64_t c = lane; c < words_per_row; c += threads_per_row) dst[c] = Word{};
  }
}

// keys[t] = the local row of token t, or `sentinel` (= local rows, sorting last) when the id is
// another shard's or invalid; values[t] = t.
template <class I>
__global__ void embedding_keys_kernel(const I* __restrict__ ids, int32_t* __restrict__ keys,
                                      int32_t* __restrict__ order, int64_t tokens,
                                      int64_t vocab_start, int64_t vocab_end, int32_t sentinel) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= tokens) return;
  const int64_t id = static_cast<int64_t>(ids[t]);
  keys[t] =
      (id >= vocab_start && id < vocab_end) ? static_cast<int32_t>(id - vocab_start) : sentinel;
  order[t] = static_cast<int32_t>(t);
}

// Block i handles sorted position i if it starts a run of equal keys (and the key is a local
// row): dW[key] += sum of dy[order[j]] over the run, j ascending (token order: stable sort).
template <class T, class G>
__global__ void embedding_segment_sum_kernel(const T* __restrict__ dy,
                                             const int32_t* __restrict__ sorted_keys,
                                             const int32_t* __restrict__ order, G* __restrict__ dw,
                                             int64_t tokens, int64_t hidden, int32_t sentinel) {
  const int64_t i = blockIdx.x;
  const int32_t key = sorted_keys[i];
  if (key == sentinel || (i > 0 && sorted_keys[i - 1] == key)) return;
  int64_t end = i + 1;
  while (end < tokens && sorted_keys[end] == key) ++end;
  G* row = dw + int64_t(key) * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    G acc = 0;
    for (int64_t j = i; j < end; ++j)
      acc += static_cast<G>(to_acc(dy[int64_t(order[j]) * hidden + c]));
    row[c] += acc;
  }
}

int bits_for(int64_t max_key) {
  int bits = 1;
  while (bits < 31 && (int64_t(1) << bits) <= max_key) ++bits;
  return bits;
}

}  // namespace

void embedding_forward_cuda(const Tensor& ids, const Tensor& weight, int64_t vocab_start,
                            int64_t vocab_size, const Tensor& invalid_count, Tensor& y) {
  const int64_t tokens = ids.numel(), hidden = weight.size(1);
  if (tokens == 0 || hidden == 0) return;
  cudaStream_t stream = cuda::stream_of(ids);
  const int64_t vocab_end = vocab_start + weight.size(0);
  const size_t row_bytes = static_cast<size_t>(hidden) * dtype_size(weight.dtype());
  int32_t* counter = invalid_count.defined() ? invalid_count.data<int32_t>() : nullptr;
  const bool ids_i64 = ids.dtype() == DType::i64;
  auto launch = [&]<class Word>() {
    const int64_t words = static_cast<int64_t>(row_bytes / sizeof(Word));
    const RowLaunch shape = row_launch(tokens, words);
    embedding_forward_kernel<Word><<<shape.blocks, kRowBlock, 0, stream>>>(
        ids.raw(), ids_i64, static_cast<const Word*>(weight.raw()), static_cast<Word*>(y.raw()),
        tokens, words, vocab_start, vocab_end, vocab_size, counter, shape.threads_per_row);
    MOE_CUDA_CHECK_LAUNCH();
  };
  if (row_bytes % 16 == 0 && aligned_to(weight.raw(), 16) && aligned_to(y.raw(), 16)) {
    launch.template operator()<uint4>();
  } else {
    switch (dtype_size(weight.dtype())) {
      case 8:
        launch.template operator()<uint2>();
        break;
      case 4:
        launch.template operator()<uint32_t>();
        break;
      default:
        launch.template operator()<uint16_t>();
        break;
    }
  }
}

void embedding_backward_cuda(const Tensor& grad_y, const Tensor& ids, int64_t vocab_start,
                             int64_t vocab_size, Tensor& grad_weight, bool accumulate) {
  const int64_t tokens = ids.numel(), hidden = grad_weight.size(1);
  const int64_t local_rows = grad_weight.size(0);
  if (!accumulate) grad_weight.zero_();  // on the current stream, ordered before the sums
  if (tokens == 0 || hidden == 0 || local_rows == 0) return;
  MOE_CHECK(tokens <= 0x7fffffffLL && local_rows < 0x7fffffffLL, "embedding_backward: ", tokens,
            " tokens or ", local_rows, " rows exceed the i32 sort keys");
  const Device device = ids.device();
  cudaStream_t stream = cuda::stream_of(ids);
  const int64_t vocab_end = vocab_start + local_rows;
  const int32_t sentinel = static_cast<int32_t>(local_rows);
  (void)vocab_size;  // invalid ids map to the sentinel like other shards' ids: no gradient

  Tensor keys = Tensor::empty({tokens}, DType::i32, device);
  Tensor order = Tensor::empty({tokens}, DType::i32, device);
  Tensor sorted_keys = Tensor::empty({tokens}, DType::i32, device);
  Tensor sorted_order = Tensor::empty({tokens}, DType::i32, device);
  constexpr int kThreads = 256;
  dispatch<DType::i32, DType::i64>(ids.dtype(), "embedding_backward (ids)", [&]<class I>() {
    embedding_keys_kernel<I>
        <<<cuda::blocks_for(tokens, kThreads, 0x7fffffffLL), kThreads, 0, stream>>>(
            ids.data<I>(), keys.data<int32_t>(), order.data<int32_t>(), tokens, vocab_start,
            vocab_end, sentinel);
    MOE_CUDA_CHECK_LAUNCH();
  });
  // Stable LSD radix sort over just the bits the keys use.
  const int end_bit = bits_for(sentinel);
  const int items = static_cast<int>(tokens);
  size_t temp_bytes = 0;
  MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, temp_bytes, keys.data<int32_t>(), sorted_keys.data<int32_t>(), order.data<int32_t>(),
      sorted_order.data<int32_t>(), items, 0, end_bit, stream));
  Tensor temp =
      Tensor::empty({static_cast<int64_t>(std::max<size_t>(temp_bytes, 1))}, DType::u8, device);
  MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      temp.raw(), temp_bytes, keys.data<int32_t>(), sorted_keys.data<int32_t>(),
      order.data<int32_t>(), sorted_order.data<int32_t>(), items, 0, end_bit, stream));

  const int threads = static_cast<int>(std::min<int64_t>(256, ((hidden + 31) / 32) * 32));
  dispatch_float(grad_y.dtype(), "embedding_backward", [&]<class T>() {
    using G = Acc<T>;  // f64 for f64, else f32: grad_weight's dtype
    embedding_segment_sum_kernel<T, G><<<static_cast<unsigned>(tokens), threads, 0, stream>>>(
        grad_y.data<T>(), sorted_keys.data<int32_t>(), sorted_order.data<int32_t>(),
        grad_weight.data<G>(), tokens, hidden, sentinel);
    MOE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace moe::ops::detail
