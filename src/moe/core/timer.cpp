#include "moe/core/timer.h"

#include "moe/core/error.h"
#include "moe/core/stream.h"

#if MOE_WITH_CUDA
#include "moe/core/cuda_utils.h"
#endif

namespace moe {

DeviceTimer::~DeviceTimer() {
#if MOE_WITH_CUDA
  for (void* e : events_) (void)cudaEventDestroy(static_cast<cudaEvent_t>(e));
#endif
}

void DeviceTimer::record() {
  if (device_.is_cpu()) {
    if (host_times_.size() <= count_) host_times_.resize(count_ + 1);
    host_times_[count_++] = std::chrono::steady_clock::now();
    return;
  }
#if MOE_WITH_CUDA
  if (events_.size() <= count_) {
    cudaEvent_t event;
    MOE_CUDA_CHECK(cudaEventCreate(&event));
    events_.push_back(event);
  }
  auto stream = reinterpret_cast<cudaStream_t>(current_stream(device_.index));
  MOE_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(events_[count_++]), stream));
#else
  MOE_FAIL("DeviceTimer on a CUDA device in a build without CUDA");
#endif
}

double DeviceTimer::elapsed_ms(size_t from, size_t to) {
  MOE_CHECK(from < count_ && to < count_, "DeviceTimer: timestamps ", from, " and ", to,
            " of ", count_);
  if (device_.is_cpu())
    return std::chrono::duration<double, std::milli>(host_times_[to] - host_times_[from]).count();
#if MOE_WITH_CUDA
  MOE_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(events_[to])));
  float ms = 0;
  MOE_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(events_[from]),
                                      static_cast<cudaEvent_t>(events_[to])));
  return ms;
#else
  return 0;
#endif
}

}  // namespace moe
