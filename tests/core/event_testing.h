// Stream-ordering tests need work that is certainly still running when they look: a StreamGate
// holds a CUDA stream at a point (a host function queued there waits on a flag) until the test
// releases it, so "not yet complete" is deterministic rather than a race against a long kernel.
// Only for *_cuda_test.cpp files (they include the CUDA runtime).
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "moe/core/error.h"
#include "moe/core/stream.h"

namespace moe::test {

class StreamGate {
 public:
  explicit StreamGate(StreamHandle stream) : state_(std::make_shared<State>()) {
    // The host function owns a reference: it may run after the gate is gone.
    auto* ref = new std::shared_ptr<State>(state_);
    const cudaError_t status =
        cudaLaunchHostFunc(reinterpret_cast<cudaStream_t>(stream), &hold, ref);
    if (status != cudaSuccess) {
      delete ref;
      MOE_FAIL("cudaLaunchHostFunc: ", cudaGetErrorString(status));
    }
  }
  // Never leaves a stream held, whatever the test did.
  ~StreamGate() { release(); }
  StreamGate(const StreamGate&) = delete;
  StreamGate& operator=(const StreamGate&) = delete;

  void release() { state_->open.store(true); }
  // True once the stream has gone past the gate.
  bool passed() const { return state_->passed.load(); }

 private:
  struct State {
    std::atomic<bool> open{false};
    std::atomic<bool> passed{false};
  };
  static void CUDART_CB hold(void* user) {
    auto* ref = static_cast<std::shared_ptr<State>*>(user);
    while (!(*ref)->open.load()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    (*ref)->passed.store(true);
    delete ref;
  }
  std::shared_ptr<State> state_;
};

// A stream of its own (non-blocking) on the current device, synchronised and destroyed at the
// end of the scope.
class TestStream {
 public:
  TestStream() {
    const cudaError_t status = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    if (status != cudaSuccess) MOE_FAIL("cudaStreamCreateWithFlags: ", cudaGetErrorString(status));
  }
  ~TestStream() {
    if (stream_ == nullptr) return;
    (void)cudaStreamSynchronize(stream_);
    (void)cudaStreamDestroy(stream_);
  }
  TestStream(const TestStream&) = delete;
  TestStream& operator=(const TestStream&) = delete;

  StreamHandle handle() const { return reinterpret_cast<StreamHandle>(stream_); }
  cudaStream_t get() const { return stream_; }
  void synchronize() const {
    const cudaError_t status = cudaStreamSynchronize(stream_);
    if (status != cudaSuccess) MOE_FAIL("cudaStreamSynchronize: ", cudaGetErrorString(status));
  }
  // Synchronises and destroys the stream now (tests of what happens after a stream is gone).
  void destroy() {
    synchronize();
    (void)cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

 private:
  cudaStream_t stream_ = nullptr;
};

// Gives queued work a chance to run (so a missing dependency would show as completed work).
inline void settle() {
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

}  // namespace moe::test
