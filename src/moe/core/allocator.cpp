#include "moe/core/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "moe/core/error.h"
#include "moe/core/stream.h"

#if MOE_WITH_CUDA
#include "moe/core/cuda_utils.h"
#endif

namespace moe {
namespace {

constexpr size_t kCpuAlignment = 64;
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeThreshold = 1 << 20;
constexpr size_t kLargeRound = 2 << 20;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

struct CachingCudaAllocator {
  struct Block {
    size_t bytes;
    int device;
    StreamHandle stream;
  };
  using FreeList = std::multimap<size_t, void*>;  // by size, for best fit

  std::mutex mutex;
  std::map<std::pair<int, StreamHandle>, FreeList> free_lists;
  std::unordered_map<void*, Block> blocks;  // every block obtained from the driver
  std::set<std::pair<int, StreamHandle>> live_streams;  // streams that allocated, not released
  std::map<int, MemoryStats> stats;

  void* allocate(size_t requested, int device) {
#if MOE_WITH_CUDA
    const size_t bytes = requested < kLargeThreshold ? round_up(requested, kSmallRound)
                                                     : round_up(requested, kLargeRound);
    StreamHandle stream = current_stream(device);
    std::lock_guard lock(mutex);
    live_streams.insert({device, stream});
    MemoryStats& s = stats[device];
    // Best fit from this stream's blocks, then from blocks of destroyed (synchronised)
    // streams; never hand a large block to a much smaller request.
    void* ptr = nullptr;
    for (StreamHandle key : {stream, static_cast<StreamHandle>(nullptr)}) {
      FreeList& list = free_lists[{device, key}];
      auto it = list.lower_bound(bytes);
      if (it != list.end() && it->first <= 2 * bytes + kLargeRound) {
        ptr = it->second;
        list.erase(it);
        blocks[ptr].stream = stream;
        break;
      }
    }
    if (ptr == nullptr) {
      cudaError_t status = cudaMalloc(&ptr, bytes);
      if (status == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        release_cached_locked();
        status = cudaMalloc(&ptr, bytes);
      }
      if (status != cudaSuccess) {
        (void)cudaGetLastError();
        MOE_FAIL("CUDA out of memory: requested ", requested, " bytes on cuda:", device,
                 " with ", s.allocated_bytes, " bytes in use and ", s.reserved_bytes,
                 " reserved (", cudaGetErrorString(status), ")");
      }
      blocks[ptr] = {bytes, device, stream};
      s.reserved_bytes += static_cast<int64_t>(bytes);
      ++s.num_device_mallocs;
    }
    s.allocated_bytes += static_cast<int64_t>(blocks[ptr].bytes);
    if (s.allocated_bytes > s.peak_allocated_bytes) s.peak_allocated_bytes = s.allocated_bytes;
    return ptr;
#else
    (void)requested;
    (void)device;
    MOE_FAIL("CUDA allocation requested, but this build has no CUDA");
#endif
  }

  void deallocate(void* ptr) {
    std::lock_guard lock(mutex);
    auto it = blocks.find(ptr);
    MOE_CHECK(it != blocks.end(), "freeing a pointer the CUDA allocator did not hand out");
    Block& block = it->second;
    stats[block.device].allocated_bytes -= static_cast<int64_t>(block.bytes);
    // A block whose stream was destroyed meanwhile (its thread ended) serves any stream.
    if (!live_streams.contains({block.device, block.stream})) block.stream = nullptr;
    free_lists[{block.device, block.stream}].emplace(block.bytes, ptr);
  }

  void release_stream(int device, StreamHandle stream) {
    std::lock_guard lock(mutex);
    live_streams.erase({device, stream});
    auto it = free_lists.find({device, stream});
    if (it == free_lists.end()) return;
    FreeList& orphans = free_lists[{device, nullptr}];
    for (auto& [bytes, ptr] : it->second) {
      orphans.emplace(bytes, ptr);
      blocks[ptr].stream = nullptr;
    }
    free_lists.erase(it);
  }

  void release_cached_locked() {
#if MOE_WITH_CUDA
    for (auto& [key, list] : free_lists) {
      for (auto& [bytes, ptr] : list) {
        (void)cudaFree(ptr);
        stats[key.first].reserved_bytes -= static_cast<int64_t>(bytes);
        blocks.erase(ptr);
      }
      list.clear();
    }
#endif
  }
};

CachingCudaAllocator& cuda_allocator() {
  static auto* allocator = new CachingCudaAllocator();  // leaked: outlives static tensors
  return *allocator;
}

std::mutex cpu_stats_mutex;
MemoryStats cpu_stats;

}  // namespace

void* allocate(size_t bytes, Device device) {
  if (device.is_cuda()) return cuda_allocator().allocate(bytes == 0 ? 1 : bytes, device.index);
  void* ptr = std::aligned_alloc(kCpuAlignment, round_up(bytes == 0 ? 1 : bytes, kCpuAlignment));
  MOE_CHECK(ptr != nullptr, "host out of memory: requested ", bytes, " bytes");
  std::lock_guard lock(cpu_stats_mutex);
  cpu_stats.allocated_bytes += static_cast<int64_t>(bytes);
  cpu_stats.reserved_bytes = cpu_stats.allocated_bytes;
  if (cpu_stats.allocated_bytes > cpu_stats.peak_allocated_bytes)
    cpu_stats.peak_allocated_bytes = cpu_stats.allocated_bytes;
  return ptr;
}

void deallocate(void* ptr, size_t bytes, Device device) {
  if (ptr == nullptr) return;
  if (device.is_cuda()) {
    cuda_allocator().deallocate(ptr);
    return;
  }
  std::free(ptr);
  std::lock_guard lock(cpu_stats_mutex);
  cpu_stats.allocated_bytes -= static_cast<int64_t>(bytes);
  cpu_stats.reserved_bytes = cpu_stats.allocated_bytes;
}

MemoryStats memory_stats(Device device) {
  if (device.is_cpu()) {
    std::lock_guard lock(cpu_stats_mutex);
    return cpu_stats;
  }
  auto& a = cuda_allocator();
  std::lock_guard lock(a.mutex);
  return a.stats[device.index];
}

void reset_peak_memory(Device device) {
  if (device.is_cpu()) {
    std::lock_guard lock(cpu_stats_mutex);
    cpu_stats.peak_allocated_bytes = cpu_stats.allocated_bytes;
    return;
  }
  auto& a = cuda_allocator();
  std::lock_guard lock(a.mutex);
  MemoryStats& s = a.stats[device.index];
  s.peak_allocated_bytes = s.allocated_bytes;
}

void release_stream_blocks(int device, StreamHandle stream) {
  cuda_allocator().release_stream(device, stream);
}

void empty_cache() {
  auto& a = cuda_allocator();
  std::lock_guard lock(a.mutex);
  a.release_cached_locked();
}

}  // namespace moe
