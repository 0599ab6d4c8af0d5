// Internal to the cutlass grouped GEMM backend: the CUTLASS sm90 grouped GEMM types, the kernel
// that builds their per-expert argument table from the device counts, and the launch. Included
// only by grouped_gemm_cutlass_{fwd_nk,fwd_kn,wgrad}_*.cu, each instantiating one family of
// kernels in one tile configuration (CutlassTiles).
//
// CUTLASS computes D = alpha A B + beta C per group with A (M x K), B (K x N, given as N x K),
// C and D (M x N). Our row-major operands map onto it as
//   forward  M = n_e, N = n, K = k:   A = x_e (K-major), B = w_e ([N, K]: K-major; [K, N]:
//            N-major), D = y_e; no C (beta = 0).
//   wgrad    M = n, N = k, K = n_e:   A = dy_e^T (dy_e [n_e, n] row-major: M-major),
//            B = x_e ([n_e, k] row-major: N-major), C = D = dw_e (beta 0 or 1, so Megatron's
//            gradient-accumulation fusion is the epilogue's beta C).
// An expert without rows gets M = 0 (no tiles): the forward has nothing to write for it, and
// the wgrad's zero or untouched gradient is the caller's (no reliance on CUTLASS's K = 0 path).
//
// Tiles: CutlassTiles (grouped_gemm_cutlass.h) names them; which one a call runs is
// cutlass_tiles_for's choice (grouped_gemm_cutlass_dispatch.cu gives the measurements).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cub/block/block_scan.cuh>
#include <map>
#include <mutex>
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/device_kernel.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "moe/core/cuda_utils.h"
#include "moe/core/tensor.h"
#include "moe/ops/grouped_gemm_cutlass_call.h"

namespace moe::ops::cutlass_grouped {

using ProblemShape = cutlass::gemm::GroupProblemShape<cute::Shape<int, int, int>>;

struct Cooperative {
  using KernelSchedule = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative;
  using EpilogueSchedule = cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative;
};

struct Pingpong {
  using KernelSchedule = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong;
  using EpilogueSchedule = cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong;
};

// The schedule of configuration C (tile_spec): its kind, output tile (M x N, K tiles of 64) and
// cluster (M x N CTAs).
template <CutlassTiles C>
struct ScheduleOf : std::conditional_t<tile_spec(C).pingpong, Pingpong, Cooperative> {
  static constexpr TileSpec kSpec = tile_spec(C);
  using TileShape = cute::Shape<cute::Int<kSpec.m>, cute::Int<kSpec.n>, cute::_64>;
  using ClusterShape =
      cute::Shape<cute::Int<kSpec.cluster_m>, cute::Int<kSpec.cluster_n>, cute::_1>;
};

// One grouped GEMM type: A (LayoutA) times B (LayoutB) into row-major D; ElementC is void when
// there is no C operand. Accumulation and the epilogue's arithmetic are f32.
template <class ElementA, class LayoutA, class ElementB, class LayoutB, class ElementC,
          class ElementD, class Schedule>
struct GroupedGemm {
  using LayoutD = cutlass::layout::RowMajor;
  static constexpr int kAlignA = 128 / cutlass::sizeof_bits<ElementA>::value;  // 16 bytes
  static constexpr int kAlignB = 128 / cutlass::sizeof_bits<ElementB>::value;
  static constexpr int kAlignD = 128 / cutlass::sizeof_bits<ElementD>::value;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, typename Schedule::TileShape,
      typename Schedule::ClusterShape, cutlass::epilogue::collective::EpilogueTileAuto, float,
      float, ElementC, LayoutD*, kAlignD, ElementD, LayoutD*, kAlignD,
      typename Schedule::EpilogueSchedule,
      cutlass::epilogue::fusion::LinearCombination<ElementD, float, ElementC, float>>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementA, LayoutA*, kAlignA, ElementB,
      LayoutB*, kAlignB, float, typename Schedule::TileShape, typename Schedule::ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      typename Schedule::KernelSchedule>::CollectiveOp;

  using Kernel =
      cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  using StrideA = typename Kernel::InternalStrideA;
  using StrideB = typename Kernel::InternalStrideB;
  using StrideC = typename Kernel::InternalStrideC;
  using StrideD = typename Kernel::InternalStrideD;
  static constexpr bool kHasC = !std::is_void_v<ElementC>;
};

// The per-expert arrays CUTLASS reads, carved from one caching-allocator block.
template <class G, class ElementA, class ElementB, class ElementC, class ElementD>
struct Table {
  ProblemShape::UnderlyingProblemShape* shapes;
  const ElementA** a;
  const ElementB** b;
  const ElementD** c;  // = d where there is a C operand
  ElementD** d;
  typename G::StrideA* stride_a;
  typename G::StrideB* stride_b;
  typename G::StrideC* stride_c;
  typename G::StrideD* stride_d;
};

// A packed operand's stride: its one dynamic mode (the other is the static unit stride) is the
// row length `ld` of the row-major tensor it is a view of.
template <class Stride>
__device__ Stride stride_with(int64_t ld) {
  Stride s{};
  if constexpr (cute::is_static<std::remove_cvref_t<decltype(cute::get<0>(s))>>::value) {
    cute::get<1>(s) = ld;
  } else {
    cute::get<0>(s) = ld;
  }
  return s;
}

constexpr int kTableThreads = 256;

// One block: exclusive prefix sums of the counts (in tiles of kTableThreads experts, carrying the
// running sum), validation, and each expert's entry. See the file comment for the mapping.
template <class G, class ElementA, class ElementB, class ElementC, class ElementD>
__global__ void __launch_bounds__(kTableThreads)
    build_table(Call call, Table<G, ElementA, ElementB, ElementC, ElementD> t) {
  using Scan = cub::BlockScan<int64_t, kTableThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  const char* op = call.wgrad ? "grouped_gemm_wgrad" : "grouped_gemm";
  const int64_t n = call.n, k = call.k;
  int64_t carry = 0;  // rows of the experts before this tile
  for (int base = 0; base < call.experts; base += kTableThreads) {
    const int e = base + static_cast<int>(threadIdx.x);
    int64_t count = 0;
    if (e < call.experts) {
      count = call.counts_i64 ? static_cast<const int64_t*>(call.counts)[e]
                              : static_cast<int64_t>(static_cast<const int32_t*>(call.counts)[e]);
      if (count < 0) {
        printf("%s: tokens_per_expert[%d] = %lld is negative\n", op, e,
               static_cast<long long>(count));
        __trap();
      }
    }
    int64_t start = 0, tile_rows = 0;
    Scan(scan_storage).ExclusiveSum(count, start, tile_rows);
    start += carry;
    if (e < call.experts && start + count <= call.rows) {
      const auto* a = static_cast<const ElementA*>(call.a);
      const auto* b = static_cast<const ElementB*>(call.b);
      auto* out = static_cast<ElementD*>(call.out);
      const int rows_e = static_cast<int>(count);
      if (!call.wgrad) {
        t.shapes[e] = {rows_e, static_cast<int>(n), static_cast<int>(k)};
        t.a[e] = a + start * k;
        t.b[e] = b + e * n * k;
        t.d[e] = out + start * n;
      } else {
        t.shapes[e] = {rows_e > 0 ? static_cast<int>(n) : 0, static_cast<int>(k), rows_e};
        t.a[e] = a + start * n;
        t.b[e] = b + start * k;
        t.d[e] = out + e * n * k;
        if constexpr (G::kHasC) {
          t.c[e] = t.d[e];
          t.stride_c[e] = stride_with<typename G::StrideC>(k);
        }
      }
      // Row lengths: forward x k, w k ([N, K]) or n ([K, N]), y n; wgrad dy n, x k, dw k.
      t.stride_a[e] = stride_with<typename G::StrideA>(call.wgrad ? n : k);
      using StrideB = typename G::StrideB;
      const bool b_k_major =
          !cute::is_static<std::remove_cvref_t<decltype(cute::get<0>(StrideB{}))>>::value;
      t.stride_b[e] = stride_with<StrideB>(call.wgrad ? k : (b_k_major ? k : n));
      t.stride_d[e] = stride_with<typename G::StrideD>(call.wgrad ? k : n);
    }
    carry += tile_rows;
    __syncthreads();  // scan_storage is reused by the next tile
  }
  if (carry > call.rows) {
    if (threadIdx.x == 0) {
      printf("%s: tokens_per_expert sums to %lld but there are only %lld rows\n", op,
             static_cast<long long>(carry), static_cast<long long>(call.rows));
    }
    __trap();
  }
  if (threadIdx.x == 0 && call.total != nullptr) *call.total = carry;
}

template <class T>
T* carve(char*& cursor, int experts) {
  T* p = reinterpret_cast<T*>(cursor);
  cursor += (sizeof(T) * static_cast<size_t>(experts) + 255) / 256 * 256;
  return p;
}

// The clusters of Kernel that fit on `device` at once (CUTLASS sizes its persistent grid by
// it; 0 lets it fall back to the SM count). Queried once per device, with the kernel's shared
// memory, which must be allowed first for the query to see it.
template <class Kernel>
int max_active_clusters(int device) {
  static std::mutex mutex;
  static std::map<int, int> cached;
  std::lock_guard lock(mutex);
  auto it = cached.find(device);
  if (it != cached.end()) return it->second;
  const void* kernel = reinterpret_cast<const void*>(&cutlass::device_kernel<Kernel>);
  const int smem = static_cast<int>(Kernel::SharedStorageSize);
  int clusters = 0;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) ==
      cudaSuccess) {
    cudaLaunchConfig_t config{};
    const dim3 cluster(cute::size<0>(typename Kernel::ClusterShape{}),
                       cute::size<1>(typename Kernel::ClusterShape{}),
                       cute::size<2>(typename Kernel::ClusterShape{}));
    config.gridDim = cluster;
    config.blockDim = dim3(Kernel::MaxThreadsPerBlock, 1, 1);
    config.dynamicSmemBytes = static_cast<size_t>(smem);
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = cluster.x;
    attribute.val.clusterDim.y = cluster.y;
    attribute.val.clusterDim.z = cluster.z;
    config.attrs = &attribute;
    config.numAttrs = 1;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess) clusters = 0;
  }
  (void)cudaGetLastError();  // a failed query is not an error of the caller's
  cached.emplace(device, clusters);
  return clusters;
}

inline const char* status_name(cutlass::Status status) {
  return cutlass::cutlassGetStatusString(status);
}

// The argument table, then the grouped GEMM, on call.stream.
template <class ElementA, class LayoutA, class ElementB, class LayoutB, class ElementC,
          class ElementD, class Schedule>
void run(const Call& call) {
  using G = GroupedGemm<ElementA, LayoutA, ElementB, LayoutB, ElementC, ElementD, Schedule>;
  using Gemm = typename G::Gemm;
  using T = Table<G, ElementA, ElementB, ElementC, ElementD>;
  const char* op = call.wgrad ? "grouped_gemm_wgrad" : "grouped_gemm";
  const auto stream = reinterpret_cast<cudaStream_t>(call.stream);
  const int experts = call.experts;

  // Sizes first (carve from null), then the block: its pointers.
  auto layout = [&](char* base, T* t) {
    char* cursor = base;
    t->shapes = carve<ProblemShape::UnderlyingProblemShape>(cursor, experts);
    t->a = carve<const ElementA*>(cursor, experts);
    t->b = carve<const ElementB*>(cursor, experts);
    t->c = carve<const ElementD*>(cursor, experts);
    t->d = carve<ElementD*>(cursor, experts);
    t->stride_a = carve<typename G::StrideA>(cursor, experts);
    t->stride_b = carve<typename G::StrideB>(cursor, experts);
    t->stride_c = carve<typename G::StrideC>(cursor, experts);
    t->stride_d = carve<typename G::StrideD>(cursor, experts);
    return static_cast<size_t>(cursor - base);
  };
  T table{};
  const size_t table_bytes = layout(nullptr, &table);
  Tensor table_block =
      Tensor::empty({static_cast<int64_t>(table_bytes)}, DType::u8, Device::cuda(call.device));
  layout(static_cast<char*>(table_block.raw()), &table);
  build_table<G><<<1, kTableThreads, 0, stream>>>(call, table);
  MOE_CUDA_CHECK_LAUNCH();

  typename Gemm::Arguments args{};
  args.mode = cutlass::gemm::GemmUniversalMode::kGrouped;
  // No host problem shapes: CUTLASS launches a persistent grid and reads the shapes on the GPU.
  args.problem_shape = {experts, table.shapes, nullptr};
  args.mainloop.ptr_A = table.a;
  args.mainloop.dA = table.stride_a;
  args.mainloop.ptr_B = table.b;
  args.mainloop.dB = table.stride_b;
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = call.beta;
  if constexpr (G::kHasC) {
    args.epilogue.ptr_C = table.c;
    args.epilogue.dC = table.stride_c;
  } else {
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = nullptr;
  }
  args.epilogue.ptr_D = table.d;
  args.epilogue.dD = table.stride_d;
  args.hw_info.device_id = call.device;
  args.hw_info.sm_count = call.sm_count;
  args.hw_info.max_active_clusters = max_active_clusters<typename G::Kernel>(call.device);

  Gemm gemm;
  cutlass::Status status = gemm.can_implement(args);
  MOE_CHECK(status == cutlass::Status::kSuccess, op, ": CUTLASS cannot run this grouped GEMM (",
            status_name(status), ")");
  const size_t workspace_bytes = std::max<size_t>(Gemm::get_workspace_size(args), 1);
  Tensor workspace =
      Tensor::empty({static_cast<int64_t>(workspace_bytes)}, DType::u8, Device::cuda(call.device));
  status = gemm.initialize(args, workspace.raw(), stream);
  MOE_CHECK(status == cutlass::Status::kSuccess, op, ": CUTLASS grouped GEMM initialize failed (",
            status_name(status), ")");
  status = gemm.run(stream);
  MOE_CHECK(status == cutlass::Status::kSuccess, op, ": CUTLASS grouped GEMM launch failed (",
            status_name(status), ")");
  MOE_CUDA_CHECK_LAUNCH();
  // table_block and workspace return to the caching allocator here: their blocks are reused
  // only by later work on this stream, which runs after this GEMM.
}

// The forward / dgrad family for one layout of w (B) in configuration C: bf16 in and out (f16
// too in the default configuration).
template <class LayoutB, CutlassTiles C>
void run_forward(DType dtype, const Call& call) {
  using A = cutlass::layout::RowMajor;  // x_e [rows, K]
  using S = ScheduleOf<C>;
  if (dtype == DType::bf16) {
    run<cutlass::bfloat16_t, A, cutlass::bfloat16_t, LayoutB, void, cutlass::bfloat16_t, S>(call);
    return;
  }
  if constexpr (C == kDefaultForward) {
    if (dtype == DType::f16) {
      run<cutlass::half_t, A, cutlass::half_t, LayoutB, void, cutlass::half_t, S>(call);
      return;
    }
  }
  MOE_FAIL("grouped_gemm: the cutlass backend has no ", dtype, " kernel in configuration ",
           cutlass_tiles_name(C));
}

template <CutlassTiles C>
void run_fwd_nk(DType dtype, const Call& call) {
  run_forward<cutlass::layout::ColumnMajor, C>(dtype, call);  // w_e [N, K]: B K-major
}

template <CutlassTiles C>
void run_fwd_kn(DType dtype, const Call& call) {
  run_forward<cutlass::layout::RowMajor, C>(dtype, call);  // w_e [K, N]: B N-major
}

// The weight-gradient family in configuration C: dw_e (+)= dy_e^T x_e, bf16 into f32 (also
// bf16 -> bf16 and f16 -> f16 / f32 in the default configuration).
template <CutlassTiles C>
void run_wgrad(DType in, DType out_dtype, const Call& call) {
  using A = cutlass::layout::ColumnMajor;  // dy_e^T
  using B = cutlass::layout::RowMajor;     // x_e
  using S = ScheduleOf<C>;
  using bf16 = cutlass::bfloat16_t;
  using f16 = cutlass::half_t;
  if (in == DType::bf16 && out_dtype == DType::f32) {
    run<bf16, A, bf16, B, float, float, S>(call);
    return;
  }
  if constexpr (C == kDefaultWgrad) {
    if (in == DType::bf16 && out_dtype == DType::bf16)
      return run<bf16, A, bf16, B, bf16, bf16, S>(call);
    if (in == DType::f16 && out_dtype == DType::f32)
      return run<f16, A, f16, B, float, float, S>(call);
    if (in == DType::f16 && out_dtype == DType::f16) return run<f16, A, f16, B, f16, f16, S>(call);
  }
  MOE_FAIL("grouped_gemm_wgrad: the cutlass backend has no ", in, " -> ", out_dtype,
           " kernel in configuration ", cutlass_tiles_name(C));
}

}  // namespace moe::ops::cutlass_grouped
