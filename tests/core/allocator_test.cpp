// The allocator without a GPU: record_stream on host memory is a no-op, and on CUDA memory in a
// build without CUDA it says why it cannot be.
#include "moe/core/allocator.h"

#include <gtest/gtest.h>

#include "moe/core/tensor.h"

namespace moe {
namespace {

TEST(Allocator, RecordStreamOnHostMemoryIsANoOp) {
  const MemoryStats before = memory_stats(Device::cpu());
  void* ptr = allocate(1000, Device::cpu());
  record_stream(ptr, Device::cpu(), nullptr);
  record_stream(static_cast<char*>(ptr) + 10, Device::cpu(), nullptr);
  deallocate(ptr, 1000, Device::cpu());
  EXPECT_EQ(memory_stats(Device::cpu()).allocated_bytes, before.allocated_bytes);

  Tensor t = Tensor::full({4, 3}, 2.0, DType::f32);
  record_stream(t.rows(1, 2).raw(), t.device(), nullptr);
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(12, 2.0f));
}

TEST(Allocator, RecordStreamOnCudaMemoryWithoutCuda) {
  if (cuda_built()) GTEST_SKIP() << "this build has CUDA";
  int dummy = 0;
  EXPECT_THROW(record_stream(&dummy, Device::cuda(0), nullptr), Error);
}

}  // namespace
}  // namespace moe
