// Memory for tensors. CPU memory is 64-byte aligned. CUDA memory comes from a caching
// allocator: freed blocks are kept in per-(device, stream) free lists and reused for later
// requests of a fitting size, so the MoE hot path (whose shapes change every step) does not
// call cudaMalloc/cudaFree. A block freed on one stream is only reused on that stream, which
// keeps reuse ordered without events. A block that other streams used too (record_stream, as
// PyTorch's allocator has: communication on its own stream) is reused only after events recorded
// on each of those streams at free time have completed. Sizes are rounded to 512 B (small) or
// 2 MiB (large).
#pragma once

#include <cstddef>
#include <cstdint>

#include "moe/core/device.h"
#include "moe/core/stream.h"

namespace moe {

struct MemoryStats {
  int64_t allocated_bytes = 0;       // held by live tensors
  int64_t peak_allocated_bytes = 0;  // maximum of the above since the last reset
  int64_t reserved_bytes = 0;        // obtained from the driver (live + cached)
  int64_t num_device_mallocs = 0;    // calls to cudaMalloc
};

void* allocate(size_t bytes, Device device);
void deallocate(void* ptr, size_t bytes, Device device);

// Marks the CUDA block holding `ptr` as used by `stream` (besides the stream that allocated it),
// so that when it is freed it is not reused before the work queued on `stream` up to the free
// has completed. No effect on CPU memory.
void record_stream(const void* ptr, Device device, StreamHandle stream);

MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);
// Returns cached, unused CUDA blocks of the general cache to the driver (private pools keep
// theirs).
void empty_cache();

// Private memory pools, for CUDA graphs (core/cuda_graph.h). A graph's replay writes the memory
// its capture was given, so that memory must never go to anything else while the graph lives:
// while a pool is set on (device, stream), that stream's allocations on the device come from
// the pool, and blocks of the pool, whenever freed, return to it (and only allocations made
// with the pool set take them). Pool 0 is the general cache.
uint64_t create_memory_pool();
// Allocations on `stream` of `device` come from `pool` from now on (0: the general cache).
void set_allocation_pool(int device, StreamHandle stream, uint64_t pool);
// The graph is gone: the pool's free blocks join the general cache, its held ones when freed.
void release_memory_pool(uint64_t pool);
// Bytes the pool holds from the driver (held by tensors or cached in it).
int64_t memory_pool_bytes(uint64_t pool);
// Called when a stream is about to be destroyed (after it was synchronised): its cached
// blocks become reusable by any stream of that device instead of being stranded.
void release_stream_blocks(int device, StreamHandle stream);

}  // namespace moe
