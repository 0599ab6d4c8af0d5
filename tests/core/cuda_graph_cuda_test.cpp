// CUDA graphs and their private memory pools: a block allocated in a pool returns to the pool,
// never to an allocation outside it, until the pool is released; a captured graph replays its
// work (here a fill and a copy) on new input values copied into the tensor it reads, and its
// outputs live in its pool; graphs sharing a pool take the temporaries the captures before them
// freed, never what they keep, and the pool lives until its last graph is gone; a capture that
// synchronises with the host fails and names the call.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "common/check.h"
#include "moe/core/allocator.h"
#include "moe/core/cuda_graph.h"
#include "moe/core/stream.h"
#include "moe/core/tensor.h"

namespace moe {
namespace {

constexpr Device kGpu = Device::cuda(0);

TEST(CudaGraphPool, APoolsBlocksStayInThePool) {
  MOE_REQUIRE_GPU();
  empty_cache();
  const size_t bytes = (5 << 20) + 11;  // a size no other test uses
  const StreamHandle stream = current_stream(0);
  const uint64_t pool = create_memory_pool();
  set_allocation_pool(0, stream, pool);
  void* in_pool = allocate(bytes, kGpu);
  deallocate(in_pool, bytes, kGpu);
  set_allocation_pool(0, stream, 0);
  EXPECT_GE(memory_pool_bytes(pool), static_cast<int64_t>(bytes));
  void* outside = allocate(bytes, kGpu);
  EXPECT_NE(outside, in_pool) << "a pool's block went to an allocation outside the pool";
  empty_cache();  // keeps the pool's blocks
  set_allocation_pool(0, stream, pool);
  void* again = allocate(bytes, kGpu);
  EXPECT_EQ(again, in_pool) << "the pool's cached block was not reused inside the pool";
  deallocate(again, bytes, kGpu);
  set_allocation_pool(0, stream, 0);
  release_memory_pool(pool);
  EXPECT_EQ(memory_pool_bytes(pool), 0);
  void* general = allocate(bytes, kGpu);  // the released pool's block serves anyone now
  EXPECT_EQ(general, in_pool);
  deallocate(general, bytes, kGpu);
  deallocate(outside, bytes, kGpu);
  EXPECT_THROW(set_allocation_pool(0, stream, pool), Error);
}

TEST(CudaGraph, ReplaysOnNewInputsAndKeepsItsOutputs) {
  MOE_REQUIRE_GPU();
  Tensor input = Tensor::from_vector<float>({1, 2, 3, 4}, {4}).to(kGpu);
  Tensor output;
  CudaGraph graph;
  graph.capture(kGpu, [&] {
    output = Tensor::empty({4}, DType::f32, kGpu);  // from the graph's pool
    output.copy_(input);
  });
  ASSERT_TRUE(graph.captured());
  EXPECT_GT(graph.pool_bytes(), 0);
  graph.replay();
  EXPECT_EQ(output.to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
  input.copy_(Tensor::from_vector<float>({5, 6, 7, 8}, {4}).to(kGpu));
  // Allocations between replays do not take the output's memory.
  Tensor other = Tensor::full({1 << 10}, 9.0, DType::f32, kGpu);
  graph.replay();
  EXPECT_EQ(output.to_vector<float>(), (std::vector<float>{5, 6, 7, 8}));
  EXPECT_EQ(other.to_vector<float>()[0], 9.0f);
}

TEST(CudaGraph, GraphsSharingAPoolReuseTemporariesNotOutputs) {
  MOE_REQUIRE_GPU();
  const int64_t n = (3 << 20) + 5;  // floats: a size no other test uses
  const Tensor input = Tensor::full({n}, 2.0, DType::f32, kGpu);
  auto pool = std::make_shared<GraphMemoryPool>();
  // Each graph copies `in` through a temporary (freed inside the capture) into an output it
  // keeps; `temporary` gets the temporary's address.
  const auto capture_copy = [&](CudaGraph& graph, const Tensor& in, Tensor& out,
                                const void*& temporary_at) {
    graph.capture(
        kGpu,
        [&] {
          Tensor temporary = Tensor::empty({n}, DType::f32, kGpu);
          temporary_at = temporary.raw();
          temporary.copy_(in);
          out = Tensor::empty({n}, DType::f32, kGpu);
          out.copy_(temporary);
        },
        pool);
  };
  Tensor first_out, second_out;
  const void* first_temporary = nullptr;
  const void* second_temporary = nullptr;
  CudaGraph first, second;
  capture_copy(first, input, first_out, first_temporary);
  const int64_t after_first = pool->bytes();
  capture_copy(second, first_out, second_out, second_temporary);
  // The second capture's temporary is the first's, its output new memory: the pool grew by one
  // tensor, not two.
  EXPECT_EQ(second_temporary, first_temporary);
  EXPECT_NE(second_out.raw(), first_out.raw());
  EXPECT_NE(second_out.raw(), first_temporary);
  EXPECT_GE(pool->bytes(), after_first + n * 4);
  EXPECT_LT(pool->bytes(), after_first + 2 * n * 4);
  EXPECT_EQ(first.pool_bytes(), second.pool_bytes());  // one pool
  first.replay();
  second.replay();
  EXPECT_EQ(second_out.to_vector<float>()[static_cast<size_t>(n - 1)], 2.0f);
  const int64_t id = pool->id();
  pool.reset();  // the graphs keep it
  EXPECT_GT(memory_pool_bytes(id), 0);
  first = CudaGraph();
  second = CudaGraph();
  first_out = second_out = Tensor();
  EXPECT_EQ(memory_pool_bytes(id), 0);  // released with its last graph
}

TEST(CudaGraph, ACaptureThatSynchronisesFailsNamingIt) {
  MOE_REQUIRE_GPU();
  const Tensor input = Tensor::full({4}, 1.0, DType::f32, kGpu);
  CudaGraph graph;
  try {
    graph.capture(kGpu, [&] { (void)input.to_vector<float>(); });  // a device-to-host read
    ADD_FAILURE() << "a capture that reads the device on the host succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA graph capture failed"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(graph.captured());
  // The stream is usable after the failed capture.
  EXPECT_EQ(input.to_vector<float>(), (std::vector<float>{1, 1, 1, 1}));
}

}  // namespace
}  // namespace moe
