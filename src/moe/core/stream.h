// CUDA streams without exposing CUDA headers: StreamHandle is cudaStream_t. Each host thread
// has its own current stream per device (created on first use, non-blocking), so ranks of
// the Local backend, which are threads, never serialise on one stream.
#pragma once

struct CUstream_st;

namespace moe {

using StreamHandle = CUstream_st*;

// The calling thread's current stream on `device_index` (also makes that device current).
StreamHandle current_stream(int device_index);
// Replaces the calling thread's current stream on its current device; returns the previous one.
StreamHandle set_current_stream(int device_index, StreamHandle stream);
// Blocks until all work queued on the current stream of `device_index` has finished.
void synchronize(int device_index);

// RAII: makes `stream` current on `device_index` for the lifetime of the guard.
class StreamGuard {
 public:
  StreamGuard(int device_index, StreamHandle stream)
      : device_index_(device_index), previous_(set_current_stream(device_index, stream)) {}
  ~StreamGuard() { set_current_stream(device_index_, previous_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_index_;
  StreamHandle previous_;
};

}  // namespace moe
