// CUDA grouped GEMM against the CPU reference, with each backend forced (and the automatic
// choice): random counts with empty experts and padding rows, few large and many small
// experts, counts on the device as i64 and i32 or given on the host, forward/dgrad and wgrad
// (written and accumulated, bf16 -> f32 main gradients), and all-empty inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "common/check.h"
#include "moe/ops/grouped_gemm.h"

namespace moe {
namespace {

using ops::GroupedGemmBackend;

const char* backend_name(GroupedGemmBackend b) {
  return ops::grouped_gemm_backend_name(b);
}

constexpr GroupedGemmBackend kBackends[] = {
    GroupedGemmBackend::automatic,          GroupedGemmBackend::per_expert_lt,
    GroupedGemmBackend::per_expert_streams, GroupedGemmBackend::per_expert_threads,
    GroupedGemmBackend::chunked_batched,    GroupedGemmBackend::grouped_batched};

// About a third of the experts get no tokens; the others 1..max_rows (some equal, so the
// grouped backend forms multi-expert groups: experts 0 and 1 get the same count).
std::vector<int64_t> random_counts(int64_t experts, int64_t max_rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> rows(1, max_rows);
  std::uniform_int_distribution<int> empty(0, 2);
  std::vector<int64_t> counts(static_cast<size_t>(experts));
  for (auto& c : counts) c = empty(rng) == 0 ? 0 : rows(rng);
  if (experts >= 2) counts[1] = counts[0];
  return counts;
}

int64_t total(const std::vector<int64_t>& counts) {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0});
}

Tensor counts_tensor(const std::vector<int64_t>& counts, DType dtype, Device device) {
  return Tensor::from_vector(counts, {static_cast<int64_t>(counts.size())}).to(dtype).to(device);
}

struct Layout {
  int64_t experts, max_rows, n, k;
};
// Few large experts (the per-expert regime) and many small ones (the grouped regime).
constexpr Layout kLayouts[] = {{4, 300, 257, 259}, {48, 24, 259, 257}};

TEST(GroupedGemmCuda, ForwardMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Device gpu = Device::cuda();
  for (const Layout& l : kLayouts) {
    const std::vector<int64_t> counts = random_counts(l.experts, l.max_rows, seed);
    const int64_t rows = total(counts) + 5;  // 5 padding rows
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (bool trans_w : {true, false}) {
        const Tensor x = test::random_normal({rows, l.k}, dt, seed + 1);
        const Shape w_shape = trans_w ? Shape{l.experts, l.n, l.k} : Shape{l.experts, l.k, l.n};
        const Tensor w = test::random_normal(w_shape, dt, seed + 2);
        const DType cdt = test::reference_dtype(dt);
        Tensor expected = Tensor::empty({rows, l.n}, cdt);
        ops::grouped_gemm(x.to(cdt), w.to(cdt), trans_w,
                          counts_tensor(counts, DType::i64, Device::cpu()), expected);
        const Tensor x_gpu = x.to(gpu), w_gpu = w.to(gpu);
        for (GroupedGemmBackend backend : kBackends)
          for (DType count_dt : {DType::i64, DType::i32}) {
            SCOPED_TRACE(testing::Message()
                         << backend_name(backend) << " E=" << l.experts << " " << dt
                         << " trans_w=" << trans_w << " counts " << count_dt);
            Tensor y = Tensor::full({rows, l.n}, NAN, dt, gpu);  // padding must be written
            ops::grouped_gemm(x_gpu, w_gpu, trans_w, counts_tensor(counts, count_dt, gpu), y, {},
                              backend);
            EXPECT_TRUE(test::close_as(y.to(Device::cpu()), expected, dt));
          }
      }
  }
}

// Counts in whole chunks (as the dispatcher pads them for the chunked backend), some zero:
// chunked_batched (forced, and chosen by automatic with >= 16 experts) matches the CPU.
TEST(GroupedGemmCuda, ChunkedMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Device gpu = Device::cuda();
  std::vector<int64_t> counts = random_counts(20, 3, seed);
  for (int64_t& c : counts) c *= ops::kGroupedGemmChunkRows;
  const int64_t rows = total(counts) + 7, n = 136, k = 264;
  for (DType dt : {DType::bf16, DType::f32})
    for (bool trans_w : {true, false}) {
      const Tensor x = test::random_normal({rows, k}, dt, seed + 1);
      const Shape w_shape = trans_w ? Shape{20, n, k} : Shape{20, k, n};
      const Tensor w = test::random_normal(w_shape, dt, seed + 2);
      Tensor expected = Tensor::empty({rows, n}, DType::f32);
      ops::grouped_gemm(x.to(DType::f32), w.to(DType::f32), trans_w,
                        counts_tensor(counts, DType::i64, Device::cpu()), expected);
      for (GroupedGemmBackend backend :
           {GroupedGemmBackend::chunked_batched, GroupedGemmBackend::automatic}) {
        SCOPED_TRACE(testing::Message()
                     << backend_name(backend) << " " << dt << " trans_w=" << trans_w);
        Tensor y = Tensor::full({rows, n}, NAN, dt, gpu);
        ops::grouped_gemm(x.to(gpu), w.to(gpu), trans_w, counts_tensor(counts, DType::i64, gpu), y,
                          {}, backend);
        EXPECT_TRUE(test::close_as(y.to(Device::cpu()), expected, dt));
      }
    }
  // wgrad: experts grouped by row count, one batched call per count; written and accumulated.
  for (DType dt : {DType::bf16, DType::f32}) {
    const Tensor dy = test::random_normal({total(counts), n}, dt, seed + 3);
    const Tensor x = test::random_normal({total(counts), k}, dt, seed + 4);
    const Tensor start = test::random_normal({20, n, k}, DType::f32, seed + 5);
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(testing::Message() << "wgrad " << dt << " accumulate=" << accumulate);
      Tensor expected = start.clone();
      ops::grouped_gemm_wgrad(dy.to(DType::f32), x.to(DType::f32),
                              counts_tensor(counts, DType::i64, Device::cpu()), expected,
                              accumulate);
      Tensor dw = start.to(gpu);
      ops::grouped_gemm_wgrad(dy.to(gpu), x.to(gpu), counts_tensor(counts, DType::i64, gpu), dw,
                              accumulate, {}, GroupedGemmBackend::chunked_batched);
      EXPECT_TRUE(test::close_as(dw.to(Device::cpu()), expected, dt));
    }
  }
}

// Given host counts, the device tensor is not read: here it holds zeros, so reading it would
// give an all-zero y.
TEST(GroupedGemmCuda, HostCountsAreUsedAsGiven) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Device gpu = Device::cuda();
  const std::vector<int64_t> counts = random_counts(16, 40, seed);
  const int64_t rows = total(counts) + 3, n = 17, k = 259;
  const Tensor x = test::random_normal({rows, k}, DType::bf16, seed + 1);
  const Tensor w = test::random_normal({16, n, k}, DType::bf16, seed + 2);
  Tensor expected = Tensor::empty({rows, n}, DType::f32);
  ops::grouped_gemm(x.to(DType::f32), w.to(DType::f32), true,
                    counts_tensor(counts, DType::i64, Device::cpu()), expected);
  const Tensor stale = Tensor::zeros({16}, DType::i64, gpu);
  for (GroupedGemmBackend backend : kBackends) {
    SCOPED_TRACE(backend_name(backend));
    Tensor y = Tensor::full({rows, n}, NAN, DType::bf16, gpu);
    ops::grouped_gemm(x.to(gpu), w.to(gpu), true, stale, y, counts, backend);
    EXPECT_TRUE(test::close_as(y.to(Device::cpu()), expected, DType::bf16));
  }
}

TEST(GroupedGemmCuda, WgradMatchesCpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Device gpu = Device::cuda();
  struct DtypeCase {
    DType in, out;
  };
  const DtypeCase dtypes[] = {{DType::f32, DType::f32},
                              {DType::bf16, DType::bf16},
                              {DType::bf16, DType::f32},
                              {DType::f64, DType::f64}};
  for (const Layout& l : kLayouts) {
    const std::vector<int64_t> counts = random_counts(l.experts, l.max_rows, seed);
    const int64_t rows = total(counts) + 4;
    for (const DtypeCase& dt : dtypes) {
      // Garbage in dy's and x's padding rows must not leak into dw.
      const Tensor dy = test::random_normal({rows, l.n}, dt.in, seed + 1);
      const Tensor x = test::random_normal({rows, l.k}, dt.in, seed + 2);
      const Tensor base = test::random_normal({l.experts, l.n, l.k}, dt.out, seed + 3);
      const DType cdt = test::reference_dtype(dt.in);
      const Tensor dy_gpu = dy.to(gpu), x_gpu = x.to(gpu);
      for (bool accumulate : {false, true}) {
        Tensor expected = base.to(cdt == DType::f64 ? DType::f64 : DType::f32);
        ops::grouped_gemm_wgrad(dy.to(cdt), x.to(cdt),
                                counts_tensor(counts, DType::i64, Device::cpu()), expected,
                                accumulate);
        for (GroupedGemmBackend backend : kBackends)
          for (DType count_dt : {DType::i64, DType::i32}) {
            SCOPED_TRACE(testing::Message()
                         << backend_name(backend) << " E=" << l.experts << " " << dt.in << "->"
                         << dt.out << " accumulate=" << accumulate << " counts " << count_dt);
            // Written gradients start as NaN: experts without tokens must come out zero.
            Tensor dw = accumulate ? base.to(gpu) : Tensor::full(base.shape(), NAN, dt.out, gpu);
            ops::grouped_gemm_wgrad(dy_gpu, x_gpu, counts_tensor(counts, count_dt, gpu), dw,
                                    accumulate, {}, backend);
            EXPECT_TRUE(test::close_as(dw.to(Device::cpu()), expected, dt.out));
          }
      }
    }
  }
}

TEST(GroupedGemmCuda, EmptyExpertsAndNoRows) {
  MOE_REQUIRE_GPU();
  const Device gpu = Device::cuda();
  for (GroupedGemmBackend backend : kBackends) {
    SCOPED_TRACE(backend_name(backend));
    // Every expert empty: y is all padding, the written dw all zeros.
    const Tensor counts = Tensor::zeros({6}, DType::i32, gpu);
    Tensor y = Tensor::full({5, 7}, NAN, DType::bf16, gpu);
    ops::grouped_gemm(Tensor::full({5, 3}, 1.0, DType::bf16, gpu),
                      Tensor::full({6, 7, 3}, 1.0, DType::bf16, gpu), true, counts, y, {}, backend);
    EXPECT_TRUE(test::equal(y.to(Device::cpu()), Tensor::zeros({5, 7}, DType::bf16)));
    Tensor dw = Tensor::full({6, 7, 3}, NAN, DType::f32, gpu);
    ops::grouped_gemm_wgrad(Tensor::full({5, 7}, 1.0, DType::bf16, gpu),
                            Tensor::full({5, 3}, 1.0, DType::bf16, gpu), counts, dw, false, {},
                            backend);
    EXPECT_TRUE(test::equal(dw.to(Device::cpu()), Tensor::zeros({6, 7, 3}, DType::f32)));
    Tensor kept = Tensor::full({6, 7, 3}, 2.0, DType::f32, gpu);
    ops::grouped_gemm_wgrad(Tensor::full({5, 7}, 1.0, DType::bf16, gpu),
                            Tensor::full({5, 3}, 1.0, DType::bf16, gpu), counts, kept, true, {},
                            backend);
    EXPECT_TRUE(test::equal(kept.to(Device::cpu()), Tensor::full({6, 7, 3}, 2.0, DType::f32)));
    // No rows at all.
    Tensor y0 = Tensor::empty({0, 7}, DType::f32, gpu);
    ops::grouped_gemm(Tensor::empty({0, 3}, DType::f32, gpu),
                      Tensor::zeros({6, 7, 3}, DType::f32, gpu), true,
                      Tensor::zeros({6}, DType::i64, gpu), y0, {}, backend);
  }
}

TEST(GroupedGemmCuda, BadDeviceCountsAreReported) {
  MOE_REQUIRE_GPU();
  const Device gpu = Device::cuda();
  Tensor y = Tensor::empty({4, 3}, DType::f32, gpu);
  const Tensor counts = counts_tensor({3, 2}, DType::i32, gpu);  // 5 > 4 rows
  try {
    ops::grouped_gemm(Tensor::zeros({4, 2}, DType::f32, gpu),
                      Tensor::zeros({2, 3, 2}, DType::f32, gpu), true, counts, y);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("grouped_gemm: tokens_per_expert sums to 5"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace moe
