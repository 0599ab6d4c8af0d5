// The cutlass grouped GEMM backend (ops/grouped_gemm_cutlass.h) against the CPU reference:
// odd and empty expert counts, a row total below the row count (the tail must be zeroed: y
// starts as NaN), both weight layouts, E = 1, 3, 16, 128, bf16 and f16; the weight gradient into
// f32 and into the input dtype, written (experts without rows exactly zero) and accumulated
// (experts without rows exactly untouched). That the backend really ran: given host counts that
// are wrong do not change its result (it reads the device counts). That a call which does not
// qualify (K not a multiple of 8) falls back to the cuBLAS path, which uses given host counts.
// Tolerances: the relative L2 error of test::tolerance for the output dtype (bf16 1e-2, f16
// 2e-3, f32 1e-5) against an f32 CPU reference on the same rounded inputs.
// Skipped without an sm_90 GPU or in a build without CUTLASS.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/ops/grouped_gemm.h"
#include "moe/ops/grouped_gemm_cutlass.h"

namespace moe {
namespace {

using ops::GroupedGemmBackend;

constexpr GroupedGemmBackend kCutlass = GroupedGemmBackend::cutlass;

bool is_sm90(int device) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return major == 9 && minor == 0;
}

#define MOE_REQUIRE_CUTLASS()                                                      \
  MOE_REQUIRE_GPU();                                                               \
  if (!ops::grouped_gemm_cutlass_built()) GTEST_SKIP() << "built without CUTLASS"; \
  if (!is_sm90(0)) GTEST_SKIP() << "the cutlass backend's kernels need an sm_90 device"

int64_t total(const std::vector<int64_t>& counts) {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0});
}

Tensor counts_tensor(const std::vector<int64_t>& counts, DType dtype, Device device) {
  return Tensor::from_vector(counts, {static_cast<int64_t>(counts.size())}).to(dtype).to(device);
}

// Odd counts with empty experts, cycled over E experts (E = 6 gives the pattern itself).
std::vector<int64_t> odd_counts(int64_t experts) {
  const int64_t pattern[] = {0, 1, 7, 129, 0, 300};
  std::vector<int64_t> counts(static_cast<size_t>(experts));
  for (int64_t e = 0; e < experts; ++e) counts[static_cast<size_t>(e)] = pattern[(e + 3) % 6];
  return counts;
}

// The [n, k] matrix of expert e of a host [E, n, k] tensor.
Tensor expert(const Tensor& w, int64_t e) {
  return w.rows(e, 1).reshape({w.size(1), w.size(2)});
}

TEST(GroupedGemmCutlassCuda, BackendNameIsKnown) {
  if (ops::grouped_gemm_cutlass_built()) {
    EXPECT_EQ(ops::parse_grouped_gemm_backend("cutlass"), GroupedGemmBackend::cutlass);
    EXPECT_STREQ(ops::grouped_gemm_backend_name(GroupedGemmBackend::cutlass), "cutlass");
  } else {
    EXPECT_SAYS(test::message_of([] { (void)ops::parse_grouped_gemm_backend("cutlass"); }),
                "cutlass", "not in this build");
  }
}

TEST(GroupedGemmCutlassCuda, QualifyingCalls) {
  MOE_REQUIRE_CUTLASS();
  const Device gpu = Device::cuda();
  const Tensor x = Tensor::zeros({40, 64}, DType::bf16, gpu);
  const Tensor w = Tensor::zeros({4, 24, 64}, DType::bf16, gpu);
  const Tensor y = Tensor::zeros({40, 24}, DType::bf16, gpu);
  EXPECT_TRUE(ops::grouped_gemm_cutlass_qualifies(x, w, y));
  const Tensor dy = Tensor::zeros({40, 24}, DType::f16, gpu);
  const Tensor xh = Tensor::zeros({40, 64}, DType::f16, gpu);
  EXPECT_TRUE(
      ops::grouped_gemm_cutlass_qualifies(dy, xh, Tensor::zeros({4, 24, 64}, DType::f32, gpu)));
  EXPECT_TRUE(
      ops::grouped_gemm_cutlass_qualifies(dy, xh, Tensor::zeros({4, 24, 64}, DType::f16, gpu)));
  // Not: f32 operands, mixed operand dtypes, a row length that is no multiple of 8, a base
  // address 2 bytes past a 16-byte boundary, an empty tensor, host tensors.
  EXPECT_FALSE(
      ops::grouped_gemm_cutlass_qualifies(x.to(DType::f32), w.to(DType::f32), y.to(DType::f32)));
  EXPECT_FALSE(ops::grouped_gemm_cutlass_qualifies(x, w.to(DType::f16), y));
  EXPECT_FALSE(ops::grouped_gemm_cutlass_qualifies(x, w, Tensor::zeros({40, 24}, DType::f16, gpu)));
  EXPECT_FALSE(ops::grouped_gemm_cutlass_qualifies(
      Tensor::zeros({40, 60}, DType::bf16, gpu), Tensor::zeros({4, 24, 60}, DType::bf16, gpu), y));
  const Tensor shifted =
      Tensor::zeros({40 * 64 + 1}, DType::bf16, gpu).rows(1, 40 * 64).reshape({40, 64});
  EXPECT_FALSE(ops::grouped_gemm_cutlass_qualifies(shifted, w, y));
  EXPECT_FALSE(ops::grouped_gemm_cutlass_qualifies(Tensor::zeros({0, 64}, DType::bf16, gpu), w,
                                                   Tensor::zeros({0, 24}, DType::bf16, gpu)));
  EXPECT_FALSE(ops::grouped_gemm_cutlass_qualifies(x.to(Device::cpu()), w.to(Device::cpu()),
                                                   y.to(Device::cpu())));
}

TEST(GroupedGemmCutlassCuda, ForwardMatchesCpu) {
  MOE_REQUIRE_CUTLASS();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Device gpu = Device::cuda();
  // n and k are multiples of 8 but not of the 128 x 128 x 64 tiles: partial tiles everywhere.
  const int64_t n = 264, k = 200;
  for (int64_t experts : {1, 3, 6, 16, 128}) {
    const std::vector<int64_t> counts =
        experts == 1 ? std::vector<int64_t>{300} : odd_counts(experts);
    const int64_t rows = total(counts) + 5;  // 5 rows past the sum: zeroed
    for (DType dt : {DType::bf16, DType::f16})
      for (bool trans_w : {true, false}) {
        SCOPED_TRACE(testing::Message() << "E=" << experts << " " << dt << " trans_w=" << trans_w);
        const Tensor x = test::random_normal({rows, k}, dt, seed + 1);
        const Shape w_shape = trans_w ? Shape{experts, n, k} : Shape{experts, k, n};
        const Tensor w = test::random_normal(w_shape, dt, seed + 2);
        Tensor expected = Tensor::empty({rows, n}, DType::f32);
        ops::grouped_gemm(x.to(DType::f32), w.to(DType::f32), trans_w,
                          counts_tensor(counts, DType::i64, Device::cpu()), expected);
        const DType count_dt = dt == DType::bf16 ? DType::i64 : DType::i32;
        const Tensor x_gpu = x.to(gpu), w_gpu = w.to(gpu);
        Tensor y = Tensor::full({rows, n}, NAN, dt, gpu);
        ASSERT_TRUE(ops::grouped_gemm_cutlass_qualifies(x_gpu, w_gpu, y));
        ops::grouped_gemm(x_gpu, w_gpu, trans_w, counts_tensor(counts, count_dt, gpu), y, {},
                          kCutlass);
        const Tensor got = y.to(Device::cpu());
        EXPECT_TRUE(test::close_as(got, expected, dt));
        EXPECT_TRUE(test::equal(got.rows(rows - 5, 5), Tensor::zeros({5, n}, dt)));
      }
  }
}

TEST(GroupedGemmCutlassCuda, WgradMatchesCpu) {
  MOE_REQUIRE_CUTLASS();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Device gpu = Device::cuda();
  const int64_t n = 136, k = 264;
  struct DtypeCase {
    DType in, out;
  };
  const DtypeCase dtypes[] = {{DType::bf16, DType::f32},
                              {DType::bf16, DType::bf16},
                              {DType::f16, DType::f32},
                              {DType::f16, DType::f16}};
  for (int64_t experts : {1, 3, 6, 16, 128}) {
    const std::vector<int64_t> counts =
        experts == 1 ? std::vector<int64_t>{129} : odd_counts(experts);
    const int64_t rows = total(counts) + 4;  // garbage rows past the sum must not leak into dw
    for (const DtypeCase& dt : dtypes) {
      const Tensor dy = test::random_normal({rows, n}, dt.in, seed + 1);
      const Tensor x = test::random_normal({rows, k}, dt.in, seed + 2);
      const Tensor base = test::random_normal({experts, n, k}, dt.out, seed + 3);
      const Tensor dy_gpu = dy.to(gpu), x_gpu = x.to(gpu);
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(testing::Message() << "E=" << experts << " " << dt.in << "->" << dt.out
                                        << " accumulate=" << accumulate);
        Tensor expected = base.to(DType::f32);
        ops::grouped_gemm_wgrad(dy.to(DType::f32), x.to(DType::f32),
                                counts_tensor(counts, DType::i64, Device::cpu()), expected,
                                accumulate);
        // Written gradients start as NaN: experts without rows must come out exactly zero;
        // accumulated ones start at `base`, which those experts must keep exactly.
        Tensor dw = accumulate ? base.to(gpu) : Tensor::full(base.shape(), NAN, dt.out, gpu);
        ASSERT_TRUE(ops::grouped_gemm_cutlass_qualifies(dy_gpu, x_gpu, dw));
        ops::grouped_gemm_wgrad(dy_gpu, x_gpu, counts_tensor(counts, DType::i64, gpu), dw,
                                accumulate, {}, kCutlass);
        const Tensor got = dw.to(Device::cpu());
        EXPECT_TRUE(test::close_as(got, expected, dt.out));
        for (int64_t e = 0; e < experts; ++e) {
          if (counts[static_cast<size_t>(e)] != 0) continue;
          SCOPED_TRACE(testing::Message() << "expert " << e << " without rows");
          EXPECT_TRUE(test::equal(expert(got, e),
                                  accumulate ? expert(base, e) : Tensor::zeros({n, k}, dt.out)));
        }
      }
    }
  }
}

// Every tile configuration (ops::CutlassTiles) against the CPU reference, as the default
// ones above: bf16 forwards with both weight layouts, the bf16 -> f32 weight gradient written
// and accumulated, odd and empty experts, n and k that leave partial tiles of every size (n =
// 264: one 256-wide tile and 8 columns; 136 rows of a 64-row tile). Each call names its
// configuration, so a configuration whose kernel were wrong fails here by name.
TEST(GroupedGemmCutlassCuda, EveryTileConfigurationMatchesCpu) {
  MOE_REQUIRE_CUTLASS();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Device gpu = Device::cuda();
  const int64_t n = 264, k = 136;
  for (int64_t experts : {6, 32}) {
    const std::vector<int64_t> counts = odd_counts(experts);
    const int64_t rows = total(counts) + 3;
    const Tensor counts_cpu = counts_tensor(counts, DType::i64, Device::cpu());
    const Tensor counts_gpu = counts_tensor(counts, DType::i64, gpu);
    const Tensor x = test::random_normal({rows, k}, DType::bf16, seed + 1);
    const Tensor dy = test::random_normal({rows, n}, DType::bf16, seed + 2);
    const Tensor base = test::random_normal({experts, n, k}, DType::f32, seed + 3);
    const Tensor x_gpu = x.to(gpu), dy_gpu = dy.to(gpu);
    for (bool trans_w : {true, false}) {
      const Tensor w = test::random_normal(trans_w ? Shape{experts, n, k} : Shape{experts, k, n},
                                           DType::bf16, seed + 4);
      Tensor expected = Tensor::empty({rows, n}, DType::f32);
      ops::grouped_gemm(x.to(DType::f32), w.to(DType::f32), trans_w, counts_cpu, expected);
      const Tensor w_gpu = w.to(gpu);
      for (ops::CutlassTiles tiles : ops::all_cutlass_tiles()) {
        SCOPED_TRACE(testing::Message() << ops::cutlass_tiles_name(tiles) << " E=" << experts
                                        << " trans_w=" << trans_w);
        Tensor y = Tensor::full({rows, n}, NAN, DType::bf16, gpu);
        ops::grouped_gemm_cutlass(x_gpu, w_gpu, trans_w, counts_gpu, y, tiles);
        const Tensor got = y.to(Device::cpu());
        EXPECT_TRUE(test::close_as(got, expected, DType::bf16));
        EXPECT_TRUE(test::equal(got.rows(rows - 3, 3), Tensor::zeros({3, n}, DType::bf16)));
      }
    }
    for (bool accumulate : {false, true}) {
      Tensor expected = base.clone();
      ops::grouped_gemm_wgrad(dy.to(DType::f32), x.to(DType::f32), counts_cpu, expected,
                              accumulate);
      for (ops::CutlassTiles tiles : ops::all_cutlass_tiles()) {
        SCOPED_TRACE(testing::Message() << ops::cutlass_tiles_name(tiles) << " E=" << experts
                                        << " accumulate=" << accumulate);
        Tensor dw = accumulate ? base.to(gpu) : Tensor::full(base.shape(), NAN, DType::f32, gpu);
        ops::grouped_gemm_wgrad_cutlass(dy_gpu, x_gpu, counts_gpu, dw, accumulate, tiles);
        const Tensor got = dw.to(Device::cpu());
        EXPECT_TRUE(test::close_as(got, expected, DType::f32));
        for (int64_t e = 0; e < experts; ++e) {
          if (counts[static_cast<size_t>(e)] != 0) continue;
          EXPECT_TRUE(test::equal(expert(got, e),
                                  accumulate ? expert(base, e) : Tensor::zeros({n, k}, DType::f32)))
              << "expert " << e << " without rows";
        }
      }
    }
  }
}

// A configuration without a kernel for the dtypes (f16 has only the defaults) is an error
// naming it, not a silently different kernel.
TEST(GroupedGemmCutlassCuda, TileConfigurationWithoutTheKernelIsRefused) {
  MOE_REQUIRE_CUTLASS();
  const Device gpu = Device::cuda();
  const Tensor counts = Tensor::full({2}, 8.0, DType::i64, gpu);
  const Tensor x = Tensor::zeros({16, 16}, DType::f16, gpu);
  const Tensor w = Tensor::zeros({2, 16, 16}, DType::f16, gpu);
  Tensor y = Tensor::zeros({16, 16}, DType::f16, gpu);
  EXPECT_SAYS(test::message_of([&] {
                ops::grouped_gemm_cutlass(x, w, true, counts, y, ops::CutlassTiles::coop_256x128);
              }),
              "f16", "coop_256x128");
  Tensor dw = Tensor::zeros({2, 16, 16}, DType::f16, gpu);
  EXPECT_SAYS(test::message_of([&] {
                ops::grouped_gemm_wgrad_cutlass(x, x, counts, dw, false,
                                                ops::CutlassTiles::coop_128x256);
              }),
              "f16", "coop_128x256");
}

// Every expert empty: y is all zero rows, the written dw all zeros, the accumulated one kept.
TEST(GroupedGemmCutlassCuda, AllExpertsEmpty) {
  MOE_REQUIRE_CUTLASS();
  const Device gpu = Device::cuda();
  const Tensor counts = Tensor::zeros({6}, DType::i32, gpu);
  Tensor y = Tensor::full({5, 16}, NAN, DType::bf16, gpu);
  ops::grouped_gemm(Tensor::full({5, 8}, 1.0, DType::bf16, gpu),
                    Tensor::full({6, 16, 8}, 1.0, DType::bf16, gpu), true, counts, y, {}, kCutlass);
  EXPECT_TRUE(test::equal(y.to(Device::cpu()), Tensor::zeros({5, 16}, DType::bf16)));
  Tensor dw = Tensor::full({6, 16, 8}, NAN, DType::f32, gpu);
  ops::grouped_gemm_wgrad(Tensor::full({5, 16}, 1.0, DType::bf16, gpu),
                          Tensor::full({5, 8}, 1.0, DType::bf16, gpu), counts, dw, false, {},
                          kCutlass);
  EXPECT_TRUE(test::equal(dw.to(Device::cpu()), Tensor::zeros({6, 16, 8}, DType::f32)));
  Tensor kept = Tensor::full({6, 16, 8}, 2.0, DType::f32, gpu);
  ops::grouped_gemm_wgrad(Tensor::full({5, 16}, 1.0, DType::bf16, gpu),
                          Tensor::full({5, 8}, 1.0, DType::bf16, gpu), counts, kept, true, {},
                          kCutlass);
  EXPECT_TRUE(test::equal(kept.to(Device::cpu()), Tensor::full({6, 16, 8}, 2.0, DType::f32)));
}

// The backend reads the counts on the device: host counts given with the call (here wrong: all
// zero, which the cuBLAS path would use as they are) change nothing.
TEST(GroupedGemmCutlassCuda, ReadsTheDeviceCounts) {
  MOE_REQUIRE_CUTLASS();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Device gpu = Device::cuda();
  const std::vector<int64_t> counts = odd_counts(16), wrong(16, 0);
  const int64_t rows = total(counts) + 3, n = 40, k = 72;
  const Tensor x = test::random_normal({rows, k}, DType::bf16, seed + 1);
  const Tensor w = test::random_normal({16, n, k}, DType::bf16, seed + 2);
  Tensor expected = Tensor::empty({rows, n}, DType::f32);
  ops::grouped_gemm(x.to(DType::f32), w.to(DType::f32), true,
                    counts_tensor(counts, DType::i64, Device::cpu()), expected);
  Tensor y = Tensor::full({rows, n}, NAN, DType::bf16, gpu);
  // What a caller holding only device counts asks before it reads them (nn::Experts).
  EXPECT_FALSE(ops::grouped_gemm_reads_counts(kCutlass, x.to(gpu), w.to(gpu), y));
  // automatic takes cutlass for these small experts' forward (ops::automatic_takes_cutlass),
  // not for their written weight gradient; any cuBLAS backend reads the counts.
  EXPECT_FALSE(
      ops::grouped_gemm_reads_counts(GroupedGemmBackend::automatic, x.to(gpu), w.to(gpu), y));
  EXPECT_TRUE(
      ops::grouped_gemm_reads_counts(GroupedGemmBackend::chunked_batched, x.to(gpu), w.to(gpu), y));
  {
    const Tensor dy_gpu = Tensor::zeros({rows, n}, DType::bf16, gpu);
    const Tensor dw_gpu = Tensor::zeros({16, n, k}, DType::f32, gpu);
    EXPECT_TRUE(ops::grouped_gemm_reads_counts(GroupedGemmBackend::automatic, dy_gpu, x.to(gpu),
                                               dw_gpu, /*accumulate=*/false));
    EXPECT_FALSE(ops::grouped_gemm_reads_counts(GroupedGemmBackend::automatic, dy_gpu, x.to(gpu),
                                                dw_gpu, /*accumulate=*/true));
  }
  ops::grouped_gemm(x.to(gpu), w.to(gpu), true, counts_tensor(counts, DType::i64, gpu), y, wrong,
                    kCutlass);
  EXPECT_TRUE(test::close_as(y.to(Device::cpu()), expected, DType::bf16));

  const Tensor dy = test::random_normal({rows, n}, DType::bf16, seed + 3);
  Tensor dw_expected = Tensor::empty({16, n, k}, DType::f32);
  ops::grouped_gemm_wgrad(dy.to(DType::f32), x.to(DType::f32),
                          counts_tensor(counts, DType::i64, Device::cpu()), dw_expected, false);
  Tensor dw = Tensor::full({16, n, k}, NAN, DType::f32, gpu);
  ops::grouped_gemm_wgrad(dy.to(gpu), x.to(gpu), counts_tensor(counts, DType::i64, gpu), dw, false,
                          wrong, kCutlass);
  EXPECT_TRUE(test::close_as(dw.to(Device::cpu()), dw_expected, DType::f32));
}

// K = 60 (no multiple of 8) does not qualify: the call falls back to the cuBLAS path, which
// uses given host counts as they are (the device counts here are stale zeros), and is correct.
TEST(GroupedGemmCutlassCuda, NonQualifyingCallFallsBack) {
  MOE_REQUIRE_CUTLASS();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Device gpu = Device::cuda();
  const std::vector<int64_t> counts = odd_counts(6);
  const int64_t rows = total(counts) + 2, n = 48, k = 60;
  const Tensor stale = Tensor::zeros({6}, DType::i64, gpu);
  const Tensor x = test::random_normal({rows, k}, DType::bf16, seed + 1);
  const Tensor w = test::random_normal({6, n, k}, DType::bf16, seed + 2);
  Tensor expected = Tensor::empty({rows, n}, DType::f32);
  ops::grouped_gemm(x.to(DType::f32), w.to(DType::f32), true,
                    counts_tensor(counts, DType::i64, Device::cpu()), expected);
  const Tensor x_gpu = x.to(gpu), w_gpu = w.to(gpu);
  Tensor y = Tensor::full({rows, n}, NAN, DType::bf16, gpu);
  EXPECT_FALSE(ops::grouped_gemm_cutlass_qualifies(x_gpu, w_gpu, y));
  EXPECT_TRUE(ops::grouped_gemm_reads_counts(kCutlass, x_gpu, w_gpu, y));
  ops::grouped_gemm(x_gpu, w_gpu, true, stale, y, counts, kCutlass);
  EXPECT_TRUE(test::close_as(y.to(Device::cpu()), expected, DType::bf16));

  const Tensor dy = test::random_normal({rows, n}, DType::bf16, seed + 3);
  Tensor dw_expected = Tensor::empty({6, n, k}, DType::f32);
  ops::grouped_gemm_wgrad(dy.to(DType::f32), x.to(DType::f32),
                          counts_tensor(counts, DType::i64, Device::cpu()), dw_expected, false);
  Tensor dw = Tensor::full({6, n, k}, NAN, DType::f32, gpu);
  EXPECT_FALSE(ops::grouped_gemm_cutlass_qualifies(dy.to(gpu), x_gpu, dw));
  ops::grouped_gemm_wgrad(dy.to(gpu), x_gpu, stale, dw, false, counts, kCutlass);
  EXPECT_TRUE(test::close_as(dw.to(Device::cpu()), dw_expected, DType::f32));
}

}  // namespace
}  // namespace moe
