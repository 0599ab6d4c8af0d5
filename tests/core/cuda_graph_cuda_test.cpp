// CUDA graphs and their private memory pools: a block allocated in a pool returns to the pool,
// never to an allocation outside it, until the pool is released; a captured graph replays its
// work (here a fill and a copy) on new input values copied into the tensor it reads, and its
// outputs live in its pool; a capture that synchronises with the host fails and names the call.
#include <gtest/gtest.h>

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
