// The cutlass grouped GEMM backend's entry points (grouped_gemm_cutlass.h): which calls qualify,
// the per-device facts they need (cached), the zeroing kernels of grouped_gemm.h's contract, and
// the hand-off to the files that instantiate the CUTLASS kernels. No CUTLASS header here, so
// this file builds (and says the backend is absent) without them.
//
// The tile configuration of a call: the caller's, or by_shape's (cutlass_tiles_for, with the
// measurements behind it, in grouped_gemm_cutlass_tiles.cpp). Every configuration has bf16
// kernels (forward with w [N, K] and [K, N], wgrad into f32); f16, and the wgrad into bf16, only
// the default ones (tile_spec in grouped_gemm_cutlass_call.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "moe/core/cuda_utils.h"
#include "moe/ops/grouped_gemm_cutlass.h"
#include "moe/ops/grouped_gemm_cutlass_call.h"

namespace moe::ops {
namespace {

// What a device is, queried once per device: the SM count sizes the persistent grid, the
// compute capability says whether the sm_90a kernels run there.
struct DeviceFacts {
  int sm_count = 0;
  int major = 0;
  int minor = 0;
};

const DeviceFacts& device_facts(int device) {
  static std::mutex mutex;
  static std::map<int, DeviceFacts> cached;
  std::lock_guard lock(mutex);
  auto it = cached.find(device);
  if (it != cached.end()) return it->second;
  DeviceFacts facts;
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&facts.sm_count, cudaDevAttrMultiProcessorCount, device));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&facts.major, cudaDevAttrComputeCapabilityMajor, device));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&facts.minor, cudaDevAttrComputeCapabilityMinor, device));
  return cached.emplace(device, facts).first->second;  // std::map: references stay valid
}

// TMA: 16-byte aligned addresses and row strides (row lengths of 8 bf16/f16 elements).
constexpr int64_t kRowMultiple = 8;
constexpr uintptr_t kAddressAlignment = 16;

bool tma_ready(const Tensor& t) {
  if (t.dim() < 1 || t.numel() == 0) return false;
  if (t.size(-1) % kRowMultiple != 0) return false;
  if (reinterpret_cast<uintptr_t>(t.raw()) % kAddressAlignment != 0) return false;
  for (int64_t d : t.shape())
    if (d > INT32_MAX) return false;  // CUTLASS's problem shapes and group count are int
  return true;
}

bool is_half(DType dt) {
  return dt == DType::bf16 || dt == DType::f16;
}

#if MOE_WITH_CUTLASS
// fn(std::integral_constant<CutlassTiles, tiles>{}): the compile-time configuration of a
// run-time one (not by_shape), so each family's instantiation of it is called.
template <class Fn>
void with_tiles(CutlassTiles tiles, Fn&& fn) {
  using T = CutlassTiles;
  switch (tiles) {
    case T::coop_128x128:
      return fn(std::integral_constant<T, T::coop_128x128>{});
    case T::coop_128x256:
      return fn(std::integral_constant<T, T::coop_128x256>{});
    case T::coop_256x128:
      return fn(std::integral_constant<T, T::coop_256x128>{});
    case T::pingpong_128x128:
      return fn(std::integral_constant<T, T::pingpong_128x128>{});
    case T::pingpong_64x256:
      return fn(std::integral_constant<T, T::pingpong_64x256>{});
    case T::by_shape:
      break;
  }
  MOE_FAIL("grouped GEMM: no cutlass kernel for tiles ", cutlass_tiles_name(tiles));
}

// y's rows past sum(counts) (the sum is on the device: *total) set to zero, 16 bytes a store.
__global__ void zero_rows_past_total(uint4* y, const int64_t* total, int64_t rows,
                                     int64_t row_words) {
  const int64_t begin = *total * row_words, end = rows * row_words;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < end;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = zero;
}

// dw_e = 0 for each expert e without rows; block (e, chunk) takes a share of expert e's matrix.
__global__ void zero_empty_experts(uint4* dw, const void* counts, bool counts_i64,
                                   int64_t expert_words) {
  const int64_t e = blockIdx.x;
  const int64_t count =
      counts_i64 ? static_cast<const int64_t*>(counts)[e] : static_cast<const int32_t*>(counts)[e];
  if (count != 0) return;  // negative counts trap in the table kernel
  uint4* expert = dw + e * expert_words;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int64_t i = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < expert_words;
       i += static_cast<int64_t>(gridDim.y) * blockDim.x)
    expert[i] = zero;
}

constexpr int kZeroThreads = 256;

cutlass_grouped::Call make_call(bool wgrad, const Tensor& counts, int64_t rows, int64_t n,
                                int64_t k, const Tensor& a, const Tensor& b, Tensor& out,
                                int64_t* total) {
  cutlass_grouped::Call call;
  call.wgrad = wgrad;
  call.counts = counts.raw();
  call.counts_i64 = counts.dtype() == DType::i64;
  call.experts = static_cast<int>(counts.size(0));
  call.rows = rows;
  call.n = n;
  call.k = k;
  call.a = a.raw();
  call.b = b.raw();
  call.out = out.raw();
  call.total = total;
  call.device = out.device().index;
  call.sm_count = device_facts(call.device).sm_count;
  call.stream = current_stream(call.device);
  return call;
}

#endif  // MOE_WITH_CUTLASS

}  // namespace

bool grouped_gemm_cutlass_qualifies(const Tensor& a, const Tensor& b, const Tensor& out) {
  if (!grouped_gemm_cutlass_built()) return false;
  if (!a.is_cuda() || !(b.device() == a.device()) || !(out.device() == a.device())) return false;
  if (!is_half(a.dtype()) || b.dtype() != a.dtype()) return false;
  if (out.dtype() != a.dtype() && out.dtype() != DType::f32) return false;
  if (!tma_ready(a) || !tma_ready(b) || !tma_ready(out)) return false;
  const DeviceFacts& facts = device_facts(a.device().index);
  return facts.major == 9 && facts.minor == 0;
}

void grouped_gemm_cutlass(const Tensor& x, const Tensor& w, bool trans_w,
                          const Tensor& tokens_per_expert, Tensor& y, CutlassTiles tiles) {
#if MOE_WITH_CUTLASS
  const cudaStream_t stream = cuda::stream_of(y);  // also makes y's device current
  Tensor total = Tensor::empty({1}, DType::i64, y.device());
  const int64_t rows = x.size(0), k = x.size(1), n = y.size(1);
  cutlass_grouped::Call call =
      make_call(false, tokens_per_expert, rows, n, k, x, w, y, total.data<int64_t>());
  if (tiles == CutlassTiles::by_shape)
    tiles = x.dtype() == DType::bf16 ? cutlass_tiles_for(false, rows, call.experts, n, k)
                                     : cutlass_grouped::kDefaultForward;
  with_tiles(tiles, [&](auto c) {
    if (trans_w) {
      cutlass_grouped::run_fwd_nk<c.value>(x.dtype(), call);
    } else {
      cutlass_grouped::run_fwd_kn<c.value>(x.dtype(), call);
    }
  });
  const int64_t row_words = n * static_cast<int64_t>(dtype_size(y.dtype())) / 16;
  const unsigned blocks =
      cuda::blocks_for(rows * row_words, kZeroThreads, 4 * static_cast<int64_t>(call.sm_count));
  zero_rows_past_total<<<blocks, kZeroThreads, 0, stream>>>(static_cast<uint4*>(y.raw()),
                                                            total.data<int64_t>(), rows, row_words);
  MOE_CUDA_CHECK_LAUNCH();
#else
  (void)x, (void)w, (void)trans_w, (void)tokens_per_expert, (void)y, (void)tiles;
  MOE_FAIL("grouped_gemm: the cutlass backend is not in this build");
#endif
}

void grouped_gemm_wgrad_cutlass(const Tensor& dy, const Tensor& x, const Tensor& tokens_per_expert,
                                Tensor& dw, bool accumulate, CutlassTiles tiles) {
#if MOE_WITH_CUTLASS
  const cudaStream_t stream = cuda::stream_of(dw);  // also makes dw's device current
  const int64_t rows = x.size(0), n = dy.size(1), k = x.size(1);
  cutlass_grouped::Call call =
      make_call(true, tokens_per_expert, rows, n, k, dy, x, dw, /*total=*/nullptr);
  call.beta = accumulate ? 1.0f : 0.0f;
  if (!accumulate) {
    // Experts without rows have an empty problem in the GEMM (M = 0): their zero gradient is
    // written here, on the counts as the device has them.
    const int64_t expert_words = n * k * static_cast<int64_t>(dtype_size(dw.dtype())) / 16;
    const dim3 grid(static_cast<unsigned>(call.experts),
                    cuda::blocks_for(expert_words, kZeroThreads, 64));
    zero_empty_experts<<<grid, kZeroThreads, 0, stream>>>(
        static_cast<uint4*>(dw.raw()), call.counts, call.counts_i64, expert_words);
    MOE_CUDA_CHECK_LAUNCH();
  }
  if (tiles == CutlassTiles::by_shape)
    tiles = x.dtype() == DType::bf16 && dw.dtype() == DType::f32
                ? cutlass_tiles_for(true, rows, call.experts, n, k)
                : cutlass_grouped::kDefaultWgrad;
  with_tiles(tiles,
             [&](auto c) { cutlass_grouped::run_wgrad<c.value>(x.dtype(), dw.dtype(), call); });
#else
  (void)dy, (void)x, (void)tokens_per_expert, (void)dw, (void)accumulate, (void)tiles;
  MOE_FAIL("grouped_gemm_wgrad: the cutlass backend is not in this build");
#endif
}

}  // namespace moe::ops
