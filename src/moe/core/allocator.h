// Memory for tensors. CPU memory is 64-byte aligned. CUDA memory comes from a caching
// allocator: freed blocks are kept in per-(device, stream) free lists and reused for later
// requests of a fitting size, so the MoE hot path (whose shapes change every step) does not
// call cudaMalloc/cudaFree. A block freed on one stream is only reused on that stream, which
// keeps reuse ordered without events. Sizes are rounded to 512 B (small) or 2 MiB (large).
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

MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);
// Returns cached, unused CUDA blocks to the driver.
void empty_cache();
// Called when a stream is about to be destroyed (after it was synchronised): its cached
// blocks become reusable by any stream of that device instead of being stranded.
void release_stream_blocks(int device, StreamHandle stream);

}  // namespace moe
