// The caching allocator's record_stream: a block another stream used is not handed out again
// before the work queued there up to the free has completed (the other stream is held by a
// StreamGate, so that work is certainly pending), then returns to its own stream's free list;
// empty_cache waits for such blocks and returns them; a released (destroyed) stream no longer
// holds blocks back. Each test starts from an empty cache and uses sizes no other test uses,
// so which block comes back is known.
#include <gtest/gtest.h>

#include <thread>

#include "common/check.h"
#include "core/event_testing.h"
#include "moe/core/allocator.h"
#include "moe/core/stream.h"
#include "moe/core/tensor.h"

namespace moe {
namespace {

constexpr Device kGpu = Device::cuda(0);

TEST(AllocatorCuda, BlockUsedByAnotherStreamWaitsForItsWork) {
  MOE_REQUIRE_GPU();
  empty_cache();
  const size_t bytes = (7 << 20) + 3;
  test::TestStream side;
  test::StreamGate gate(side.handle());  // side's work (here: the gate) is pending

  void* a = allocate(bytes, kGpu);
  record_stream(a, kGpu, side.handle());
  deallocate(a, bytes, kGpu);
  void* b = allocate(bytes, kGpu);
  EXPECT_NE(b, a) << "a block still used by another stream was handed out again";

  gate.release();
  side.synchronize();
  void* c = allocate(bytes, kGpu);  // the pending block is free now, on this stream's list
  EXPECT_EQ(c, a) << "the block did not come back once the other stream's work completed";
  deallocate(b, bytes, kGpu);
  deallocate(c, bytes, kGpu);
}

TEST(AllocatorCuda, RecordStreamThroughATensorView) {
  MOE_REQUIRE_GPU();
  empty_cache();
  test::TestStream side;
  const void* first = nullptr;
  {
    test::StreamGate gate(side.handle());
    {
      Tensor t = Tensor::empty({1000, 1001}, DType::f32, kGpu);
      first = t.raw();
      record_stream(t.rows(500, 10).raw(), t.device(), side.handle());  // inside the block
    }
    Tensor u = Tensor::empty({1000, 1001}, DType::f32, kGpu);
    EXPECT_NE(u.raw(), first);
    gate.release();
    side.synchronize();
  }
  Tensor v = Tensor::empty({1000, 1001}, DType::f32, kGpu);
  Tensor w = Tensor::empty({1000, 1001}, DType::f32, kGpu);
  EXPECT_TRUE(v.raw() == first || w.raw() == first);
}

TEST(AllocatorCuda, OwnStreamNeedsNoEvent) {
  MOE_REQUIRE_GPU();
  empty_cache();
  const size_t bytes = (9 << 20) + 5;
  test::StreamGate gate(current_stream(0));  // work of the allocating stream never delays reuse
  void* a = allocate(bytes, kGpu);
  record_stream(a, kGpu, current_stream(0));
  deallocate(a, bytes, kGpu);
  void* b = allocate(bytes, kGpu);
  EXPECT_EQ(b, a);
  deallocate(b, bytes, kGpu);
  gate.release();
  synchronize(0);
}

TEST(AllocatorCuda, EmptyCacheWaitsForPendingBlocks) {
  MOE_REQUIRE_GPU();
  empty_cache();
  const size_t bytes = (11 << 20) + 7;
  test::TestStream side;
  test::StreamGate gate(side.handle());
  void* a = allocate(bytes, kGpu);
  record_stream(a, kGpu, side.handle());
  deallocate(a, bytes, kGpu);
  const int64_t reserved = memory_stats(kGpu).reserved_bytes;
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    gate.release();
  });
  empty_cache();  // waits for the side stream, then returns the block to the driver
  EXPECT_TRUE(gate.passed()) << "empty_cache returned before the pending block was free";
  EXPECT_LE(memory_stats(kGpu).reserved_bytes, reserved - static_cast<int64_t>(bytes))
      << "the pending block was not returned to the driver";
  opener.join();
}

TEST(AllocatorCuda, ReleasedStreamHoldsNoBlockBack) {
  MOE_REQUIRE_GPU();
  empty_cache();
  const size_t bytes = (13 << 20) + 9;
  auto side = std::make_unique<test::TestStream>();
  void* a = allocate(bytes, kGpu);
  record_stream(a, kGpu, side->handle());
  // The stream goes away first (synchronised), as a group's communication stream does.
  side->synchronize();
  release_stream_blocks(0, side->handle());
  side->destroy();
  deallocate(a, bytes, kGpu);  // no event on the destroyed stream
  void* b = allocate(bytes, kGpu);
  EXPECT_EQ(b, a);
  deallocate(b, bytes, kGpu);
}

TEST(AllocatorCuda, RecordStreamNamesForeignPointers) {
  MOE_REQUIRE_GPU();
  test::TestStream side;
  int host = 0;
  EXPECT_THROW(record_stream(&host, kGpu, side.handle()), Error);
  const size_t bytes = 4096;
  void* a = allocate(bytes, kGpu);
  deallocate(a, bytes, kGpu);
  EXPECT_THROW(record_stream(a, kGpu, side.handle()), Error) << "a freed block";
}

}  // namespace
}  // namespace moe
