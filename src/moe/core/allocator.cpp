#include "moe/core/allocator.h"

#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <vector>

#include "moe/core/error.h"
#include "moe/core/event.h"
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

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

// The caching allocator. A block is in exactly one of three states:
//   allocated  - held by a tensor;
//   pending    - freed, but streams other than its own used it (record_stream): it waits for an
//                event recorded on each of them at free time (`pending_events` counts those
//                not yet seen complete) and is in no free list;
//   free       - in the free list of (its device, its stream, its pool), or of (device,
//                nullptr, pool) once its stream is gone, which serves any stream.
// Pools: pool 0 is the general cache; a private pool (a CUDA graph's, core/cuda_graph.h) takes
// the allocations of the (device, stream) it is active on, and its blocks go back to its own
// free lists, so nothing outside the graph is handed memory a replay writes. A released pool's
// blocks join pool 0 as they are freed.
// Pending events are polled (never waited for) at each allocate; they are waited for only when
// the device is out of memory and by empty_cache, as PyTorch's CUDACachingAllocator does:
// waiting before every cudaMalloc would stall compute behind communication still in flight.
struct CachingCudaAllocator {
  struct Block {
    size_t bytes = 0;
    int device = 0;
    StreamHandle stream = nullptr;  // allocation stream (free: the list it is or will be in)
    bool allocated = false;
    std::set<StreamHandle> stream_uses;  // other streams that used it since it was allocated
    int pending_events = 0;
    uint64_t pool = 0;  // 0: the general cache
  };
  struct PendingEvent {
    Event event;
    void* ptr;
  };
  using FreeList = std::multimap<size_t, void*>;            // by size, for best fit
  using ListKey = std::tuple<int, StreamHandle, uint64_t>;  // device, stream, pool

  std::mutex mutex;
  std::map<ListKey, FreeList> free_lists;
  std::map<std::pair<int, StreamHandle>, uint64_t> active_pools;  // where a pool is capturing
  std::set<uint64_t> live_pools;
  uint64_t next_pool = 1;
  // Every block obtained from the driver, by base address: ordered, so record_stream finds the
  // block holding a pointer into it (a view's data).
  std::map<void*, Block> blocks;
  std::set<std::pair<int, StreamHandle>> live_streams;  // streams that allocated, not released
  std::list<PendingEvent> pending;                      // in the order they were recorded
  std::map<int, std::vector<Event>> spare_events;       // per device, for reuse
  std::map<int, MemoryStats> stats;

  void* allocate(size_t requested, int device) {
#if MOE_WITH_CUDA
    const size_t bytes = requested < kLargeThreshold ? round_up(requested, kSmallRound)
                                                     : round_up(requested, kLargeRound);
    StreamHandle stream = current_stream(device);
    std::lock_guard lock(mutex);
    live_streams.insert({device, stream});
    MemoryStats& s = stats[device];
    uint64_t pool = 0;  // the general cache unless a graph is capturing on this stream
    if (!active_pools.empty()) {
      const auto active = active_pools.find({device, stream});
      if (active != active_pools.end()) pool = active->second;
    }
    process_events_locked();
    void* ptr = take_cached_locked(device, stream, bytes, pool);
    if (ptr == nullptr) {
      cudaError_t status = cudaMalloc(&ptr, bytes);
      if (status == cudaErrorMemoryAllocation) {
        // Out of memory: wait for the blocks other streams still use, take one of those if it
        // fits, else give every cached block back to the driver and try again.
        (void)cudaGetLastError();
        synchronize_events_locked();
        ptr = take_cached_locked(device, stream, bytes, pool);
        if (ptr == nullptr) {
          release_cached_locked();
          status = cudaMalloc(&ptr, bytes);
        } else {
          status = cudaSuccess;
        }
      }
      if (status != cudaSuccess) {
        (void)cudaGetLastError();
        MOE_FAIL("CUDA out of memory: requested ", requested, " bytes on cuda:", device, " with ",
                 s.allocated_bytes, " bytes in use and ", s.reserved_bytes, " reserved (",
                 cudaGetErrorString(status), ")");
      }
      if (!blocks.contains(ptr)) {
        Block& block = blocks[ptr];
        block.bytes = bytes;
        block.device = device;
        block.pool = pool;
        s.reserved_bytes += static_cast<int64_t>(bytes);
        ++s.num_device_mallocs;
      }
    }
    Block& block = blocks.at(ptr);
    block.stream = stream;
    block.allocated = true;
    s.allocated_bytes += static_cast<int64_t>(block.bytes);
    if (s.allocated_bytes > s.peak_allocated_bytes) s.peak_allocated_bytes = s.allocated_bytes;
    return ptr;
#else
    (void)requested;
    (void)device;
    MOE_FAIL("CUDA allocation requested, but this build has no CUDA");
#endif
  }

  // Best fit from this stream's blocks of `pool`, then from the pool's blocks of destroyed
  // (synchronised) streams; never hands a large block to a much smaller request. Null when
  // nothing fits.
  void* take_cached_locked(int device, StreamHandle stream, size_t bytes, uint64_t pool) {
    for (StreamHandle key : {stream, static_cast<StreamHandle>(nullptr)}) {
      auto list_it = free_lists.find({device, key, pool});
      if (list_it == free_lists.end()) continue;
      FreeList& list = list_it->second;
      auto it = list.lower_bound(bytes);
      if (it != list.end() && it->first <= 2 * bytes + kLargeRound) {
        void* ptr = it->second;
        list.erase(it);
        return ptr;
      }
    }
    return nullptr;
  }

  void deallocate(void* ptr) {
    std::lock_guard lock(mutex);
    auto it = blocks.find(ptr);
    MOE_CHECK(it != blocks.end() && it->second.allocated,
              "freeing a pointer the CUDA allocator did not hand out (or freed already)");
    Block& block = it->second;
    block.allocated = false;
    stats[block.device].allocated_bytes -= static_cast<int64_t>(block.bytes);
    // Each stream that used the block gets an event after the work queued on it so far; the
    // block is reusable once all have completed.
    for (StreamHandle used_by : block.stream_uses) {
      Event event = spare_event_locked(block.device);
      if (record_or_wait(event, block.device, used_by)) {
        pending.push_back({std::move(event), ptr});
        ++block.pending_events;
      }
    }
    block.stream_uses.clear();
    if (block.pending_events == 0) free_block_locked(ptr);
  }

  void record_stream(const void* ptr, int device, StreamHandle stream) {
    std::lock_guard lock(mutex);
    auto it = blocks.upper_bound(const_cast<void*>(ptr));
    const auto* p = static_cast<const char*>(ptr);
    bool found = it != blocks.begin();
    if (found) {
      --it;
      const auto* base = static_cast<const char*>(it->first);
      found = it->second.allocated && p < base + it->second.bytes;
    }
    MOE_CHECK(found, "record_stream: ", ptr, " on cuda:", device,
              " is not in a block the CUDA allocator has handed out");
    Block& block = it->second;
    MOE_CHECK(block.device == device, "record_stream: ", ptr,
              " was allocated on cuda:", block.device, ", not on cuda:", device);
    if (stream != block.stream) block.stream_uses.insert(stream);
  }

  void release_stream(int device, StreamHandle stream) {
    std::lock_guard lock(mutex);
    live_streams.erase({device, stream});
    // The stream was synchronised: nothing it queued still uses any block.
    for (auto& [ptr, block] : blocks) {
      if (block.device == device) block.stream_uses.erase(stream);
    }
    active_pools.erase({device, stream});
    // Its free blocks (of every pool) serve any stream of the device, in their pool.
    for (auto it = free_lists.begin(); it != free_lists.end();) {
      const auto& [list_device, list_stream, pool] = it->first;
      if (list_device != device || list_stream != stream) {
        ++it;
        continue;
      }
      FreeList& orphans = free_lists[{device, nullptr, pool}];
      for (auto& [bytes, ptr] : it->second) {
        orphans.emplace(bytes, ptr);
        blocks.at(ptr).stream = nullptr;
      }
      it = free_lists.erase(it);
    }
  }

  // Returns the general cache's blocks to the driver, after waiting for the pending ones to
  // become free. Private pools keep theirs (a graph's replay writes them).
  void release_cached_locked() {
#if MOE_WITH_CUDA
    synchronize_events_locked();
    for (auto& [key, list] : free_lists) {
      if (std::get<2>(key) != 0) continue;
      for (auto& [bytes, ptr] : list) {
        (void)cudaFree(ptr);
        stats[std::get<0>(key)].reserved_bytes -= static_cast<int64_t>(bytes);
        blocks.erase(ptr);
      }
      list.clear();
    }
    spare_events.clear();
#endif
  }

  uint64_t create_pool() {
    std::lock_guard lock(mutex);
    live_pools.insert(next_pool);
    return next_pool++;
  }

  void set_pool(int device, StreamHandle stream, uint64_t pool) {
    std::lock_guard lock(mutex);
    MOE_CHECK(pool == 0 || live_pools.contains(pool), "memory pool ", pool,
              " does not exist (released, or never created)");
    if (pool == 0)
      active_pools.erase({device, stream});
    else
      active_pools[{device, stream}] = pool;
  }

  // The pool's free blocks join the general cache; its blocks still held do when freed.
  void release_pool(uint64_t pool) {
    std::lock_guard lock(mutex);
    if (!live_pools.erase(pool)) return;
    for (auto it = active_pools.begin(); it != active_pools.end();)
      it = it->second == pool ? active_pools.erase(it) : std::next(it);
    for (auto it = free_lists.begin(); it != free_lists.end();) {
      const auto& [device, stream, owner] = it->first;
      if (owner != pool) {
        ++it;
        continue;
      }
      FreeList& general = free_lists[{device, stream, 0}];
      for (auto& [bytes, ptr] : it->second) {
        general.emplace(bytes, ptr);
        blocks.at(ptr).pool = 0;
      }
      it = free_lists.erase(it);
    }
    for (auto& [ptr, block] : blocks)
      if (block.pool == pool) block.pool = 0;  // held blocks: the general cache's once freed
  }

  int64_t pool_bytes(uint64_t pool) {
    std::lock_guard lock(mutex);
    int64_t bytes = 0;
    for (const auto& [ptr, block] : blocks)
      if (block.pool == pool) bytes += static_cast<int64_t>(block.bytes);
    return bytes;
  }

 private:
  // A freed block, no longer used by any stream, goes to its stream's free list, or to the
  // list serving any stream if its stream was destroyed meanwhile (its thread ended).
  void free_block_locked(void* ptr) {
    Block& block = blocks.at(ptr);
    if (!live_streams.contains({block.device, block.stream})) block.stream = nullptr;
    free_lists[{block.device, block.stream, block.pool}].emplace(block.bytes, ptr);
  }

  // One pending event has been seen complete: the block is free when it was the last one.
  void event_done_locked(std::list<PendingEvent>::iterator it) {
    Block& block = blocks.at(it->ptr);
    void* ptr = it->ptr;
    spare_events[block.device].push_back(std::move(it->event));
    pending.erase(it);
    if (--block.pending_events == 0) free_block_locked(ptr);
  }

  void process_events_locked() {
    for (auto it = pending.begin(); it != pending.end();) {
      auto next = std::next(it);
      if (it->event.query()) event_done_locked(it);
      it = next;
    }
  }

  void synchronize_events_locked() {
    while (!pending.empty()) {
      pending.front().event.synchronize();
      event_done_locked(pending.begin());
    }
  }

  Event spare_event_locked(int device) {
    std::vector<Event>& spares = spare_events[device];
    if (spares.empty()) return Event();
    Event event = std::move(spares.back());
    spares.pop_back();
    return event;
  }

  // Records `event` on `stream`. If that fails (deallocate may run in a destructor, which must
  // not throw), waits for the whole device instead, so the block is safe to reuse at once, and
  // returns false.
  static bool record_or_wait(Event& event, int device, StreamHandle stream) {
    try {
      event.record(device, stream);
      return true;
    } catch (const Error&) {
#if MOE_WITH_CUDA
      (void)cudaGetLastError();
      int previous = -1;
      (void)cudaGetDevice(&previous);
      (void)cudaSetDevice(device);
      (void)cudaDeviceSynchronize();
      if (previous >= 0) (void)cudaSetDevice(previous);
#endif
      return false;
    }
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

void record_stream(const void* ptr, Device device, StreamHandle stream) {
  if (device.is_cpu() || ptr == nullptr) return;
#if MOE_WITH_CUDA
  cuda_allocator().record_stream(ptr, device.index, stream);
#else
  MOE_FAIL("record_stream on ", device, " memory, but this build has no CUDA");
#endif
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

uint64_t create_memory_pool() {
  return cuda_allocator().create_pool();
}

void set_allocation_pool(int device, StreamHandle stream, uint64_t pool) {
  cuda_allocator().set_pool(device, stream, pool);
}

void release_memory_pool(uint64_t pool) {
  cuda_allocator().release_pool(pool);
}

int64_t memory_pool_bytes(uint64_t pool) {
  return cuda_allocator().pool_bytes(pool);
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
