// The Local backend with CUDA tensors: 8 ranks on one GPU (and, given two or more GPUs, ranks
// spread over them) run every collective on fresh random inputs with odd sizes and zero
// counts; every output must equal the CPU backend's bitwise, since the reductions sum in the
// same rank order with the same accumulator (fp32 for bf16/f16) on both devices.
#include <gtest/gtest.h>

#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/dist/local_backend.h"

namespace moe::dist {
namespace {

constexpr int kWorld = 8;

// Rank r's k-th input: random values, drawn on the host so both devices get the same bits.
Tensor input(const Shape& shape, DType dtype, uint64_t seed, int rank, int k, Device device) {
  const uint64_t s = seed + static_cast<uint64_t>(1000 * rank + k);
  Tensor host = is_floating(dtype) ? test::random_normal(shape, dtype, s, Device::cpu(), 3.0)
                                   : test::random_uniform(shape, DType::f64, s, -1000, 1000)
                                         .to(dtype);  // integers: truncated uniforms
  return host.to(device);
}

std::vector<int64_t> uneven(int world, int64_t scale) {
  std::vector<int64_t> counts;
  for (int q = 0; q < world; ++q) counts.push_back((2 * q + 1) % 3 * scale);  // 1, 0, 2, ...
  return counts;
}

// Every collective on `world` ranks, rank r's tensors on device_of(r); returns each rank's
// outputs on the host, in call order.
std::vector<std::vector<Tensor>> run_collectives(DType dtype, uint64_t seed,
                                                 const std::function<Device(int)>& device_of) {
  std::vector<std::vector<Tensor>> results(kWorld);
  run_local(kWorld, [&](std::shared_ptr<ProcessGroup> pg) {
    const int r = pg->rank();
    const Device dev = device_of(r);
    std::vector<Tensor>& out = results[static_cast<size_t>(r)];
    int k = 0;

    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
      for (const Shape& shape : {Shape{257, 3}, Shape{0, 5}, Shape{}}) {
        Tensor t = input(shape, dtype, seed, r, k++, dev);
        pg->all_reduce(t, op);
        out.push_back(t.to(Device::cpu()));
      }
    }
    {
      Tensor in = input({37, 5}, dtype, seed, r, k++, dev);
      Tensor gathered = Tensor::zeros({kWorld * 37, 5}, dtype, dev);
      pg->all_gather(in, gathered);
      out.push_back(gathered.to(Device::cpu()));
    }
    {
      // The input is still being written on this rank's stream when the collective starts:
      // the backend must wait for it before a peer reads it.
      Tensor in = Tensor::empty({129, 3}, dtype, dev);
      in.fill_(r + 1);
      Tensor gathered = Tensor::zeros({kWorld * 129, 3}, dtype, dev);
      pg->all_gather(in, gathered);
      out.push_back(gathered.to(Device::cpu()));
    }
    {
      const std::vector<int64_t> counts = uneven(kWorld, 19);
      const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
      Tensor in = input({counts[static_cast<size_t>(r)], 7}, dtype, seed, r, k++, dev);
      Tensor gathered = Tensor::zeros({total, 7}, dtype, dev);
      pg->all_gather_v(in, gathered, counts);
      out.push_back(gathered.to(Device::cpu()));
    }
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
      Tensor in = input({kWorld * 13, 7}, dtype, seed, r, k++, dev);
      Tensor scattered = Tensor::zeros({13, 7}, dtype, dev);
      pg->reduce_scatter(in, scattered, op);
      out.push_back(scattered.to(Device::cpu()));
    }
    {
      const std::vector<int64_t> counts = uneven(kWorld, 11);
      const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
      Tensor in = input({total, 5}, dtype, seed, r, k++, dev);
      Tensor scattered = Tensor::zeros({counts[static_cast<size_t>(r)], 5}, dtype, dev);
      pg->reduce_scatter_v(in, scattered, counts);
      out.push_back(scattered.to(Device::cpu()));
    }
    {
      // Rank s sends (s + 2d) mod 3 x 5 rows to rank d: some pairs exchange nothing.
      auto rows = [](int s, int d) -> int64_t { return (s + 2 * d) % 3 * 5; };
      std::vector<int64_t> sends, recvs;
      for (int q = 0; q < kWorld; ++q) {
        sends.push_back(rows(r, q));
        recvs.push_back(rows(q, r));
      }
      const int64_t send_total = std::accumulate(sends.begin(), sends.end(), int64_t{0});
      const int64_t recv_total = std::accumulate(recvs.begin(), recvs.end(), int64_t{0});
      Tensor in = input({send_total, 9}, dtype, seed, r, k++, dev);
      Tensor received = Tensor::zeros({recv_total, 9}, dtype, dev);
      pg->all_to_all_v(in, received, sends, recvs);
      out.push_back(received.to(Device::cpu()));
    }
    {
      Tensor t = input({31, 4}, dtype, seed, r, k++, dev);
      pg->broadcast(t, kWorld - 2);
      out.push_back(t.to(Device::cpu()));
    }
    {
      auto half = pg->split({{0, 2, 4, 6}, {1, 3, 5, 7}});
      Tensor t = input({65}, dtype, seed, r, k++, dev);
      half->all_reduce(t);
      out.push_back(t.to(Device::cpu()));
    }
    pg->barrier();
  });
  return results;
}

void expect_same_as_cpu(DType dtype, const std::function<Device(int)>& device_of) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(std::string(dtype_name(dtype)) + " seed " + std::to_string(seed));
  const auto cpu = run_collectives(dtype, seed, [](int) { return Device::cpu(); });
  const auto gpu = run_collectives(dtype, seed, device_of);
  for (int r = 0; r < kWorld; ++r) {
    const auto& c = cpu[static_cast<size_t>(r)];
    const auto& g = gpu[static_cast<size_t>(r)];
    ASSERT_EQ(c.size(), g.size());
    for (size_t i = 0; i < c.size(); ++i)
      EXPECT_TRUE(
          test::equal(g[i], c[i], "rank " + std::to_string(r) + " result " + std::to_string(i)));
  }
}

TEST(LocalBackendCuda, EightRanksOnOneGpuMatchTheCpuBitwise) {
  MOE_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::f64, DType::i64, DType::i32})
    expect_same_as_cpu(dtype, [](int) { return Device::cuda(0); });
}

TEST(LocalBackendCuda, RanksOnDifferentGpusMatchTheCpuBitwise) {
  MOE_REQUIRE_GPU();
  const int gpus = cuda_device_count();
  if (gpus < 2) GTEST_SKIP() << "needs two GPUs";
  for (DType dtype : {DType::f32, DType::bf16})
    expect_same_as_cpu(dtype, [gpus](int r) { return Device::cuda(r % gpus); });
}

// A known answer on the GPU too: bf16 sums accumulate in fp32 (256 + 7 x 1 = 263 -> 264).
TEST(LocalBackendCuda, HalfPrecisionSumsAccumulateInFp32) {
  MOE_REQUIRE_GPU();
  run_local(kWorld, [](std::shared_ptr<ProcessGroup> pg) {
    Tensor t = Tensor::full({300}, pg->rank() == 0 ? 256.0 : 1.0, DType::bf16, Device::cuda(0));
    pg->all_reduce(t);
    EXPECT_TRUE(test::equal(t.to(Device::cpu()), Tensor::full({300}, 264.0, DType::bf16)));
  });
}

TEST(LocalBackendCuda, CpuAndCudaMembersInOneCollectiveAreRejected) {
  MOE_REQUIRE_GPU();
  std::vector<std::string> seen(2);
  EXPECT_THROW(run_local(2,
                         [&](std::shared_ptr<ProcessGroup> pg) {
                           const Device dev = pg->rank() == 0 ? Device::cpu() : Device::cuda(0);
                           Tensor t = Tensor::zeros({4}, DType::f32, dev);
                           try {
                             pg->all_reduce(t);
                           } catch (const Error& e) {
                             seen[static_cast<size_t>(pg->rank())] = e.what();
                             throw;
                           }
                         }),
               Error);
  for (const std::string& m : seen) {
    EXPECT_NE(m.find("device kind differs across ranks: rank 0 cpu, rank 1 cuda"),
              std::string::npos)
        << m;
  }
}

}  // namespace
}  // namespace moe::dist
