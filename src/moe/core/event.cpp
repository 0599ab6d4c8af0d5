// Event (event.h) over the CUDA runtime. The CUDA event is created lazily by the first record,
// on the device of that record, so an Event that is never recorded costs nothing and needs no
// device; recording on another device later replaces it with one of that device (a CUDA event
// can only be recorded on a stream of its own device).
#include "moe/core/event.h"

#include <utility>

#include "moe/core/error.h"

#if MOE_WITH_CUDA
#include <cuda_runtime.h>

#include "moe/core/cuda_utils.h"
#endif

namespace moe {

#if MOE_WITH_CUDA
namespace {

// Makes `device` current for a scope and restores the previous device: creating and
// destroying an event acts on the current device, and callers must not see it changed.
class CurrentDevice {
 public:
  explicit CurrentDevice(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) status_ = cudaSetDevice(device);
  }
  ~CurrentDevice() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  cudaError_t status() const { return status_; }
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;

 private:
  int previous_ = -1;
  cudaError_t status_ = cudaSuccess;
};

void destroy_event(EventHandle event, int device) {
  if (event == nullptr) return;
  // Never throws (destructors): a failure here means the context is already gone.
  CurrentDevice guard(device);
  (void)cudaEventDestroy(reinterpret_cast<cudaEvent_t>(event));
}

}  // namespace

Event::~Event() {
  destroy_event(event_, device_index_);
}

void Event::record(int device_index, StreamHandle stream) {
  if (event_ != nullptr && device_index_ != device_index) {
    destroy_event(event_, device_index_);
    event_ = nullptr;
  }
  CurrentDevice guard(device_index);
  MOE_CUDA_CHECK(guard.status());
  if (event_ == nullptr) {
    cudaEvent_t created;
    MOE_CUDA_CHECK(cudaEventCreateWithFlags(&created, cudaEventDisableTiming));
    event_ = reinterpret_cast<EventHandle>(created);
    device_index_ = device_index;
  }
  MOE_CUDA_CHECK(cudaEventRecord(reinterpret_cast<cudaEvent_t>(event_),
                                 reinterpret_cast<cudaStream_t>(stream)));
}

void Event::block(StreamHandle stream) const {
  if (event_ == nullptr) return;
  MOE_CUDA_CHECK(cudaStreamWaitEvent(reinterpret_cast<cudaStream_t>(stream),
                                     reinterpret_cast<cudaEvent_t>(event_), 0));
}

bool Event::query() const {
  if (event_ == nullptr) return true;
  const cudaError_t status = cudaEventQuery(reinterpret_cast<cudaEvent_t>(event_));
  if (status == cudaErrorNotReady) {
    (void)cudaGetLastError();  // "not ready" is an answer, not an error to report later
    return false;
  }
  MOE_CUDA_CHECK(status);
  return true;
}

void Event::synchronize() const {
  if (event_ == nullptr) return;
  MOE_CUDA_CHECK(cudaEventSynchronize(reinterpret_cast<cudaEvent_t>(event_)));
}

#else  // no CUDA: an Event can be made, moved and destroyed, never recorded

Event::~Event() = default;

void Event::record(int, StreamHandle) {
  MOE_FAIL("Event::record: this build has no CUDA");
}
void Event::block(StreamHandle) const {
  MOE_FAIL("Event::block: this build has no CUDA");
}
bool Event::query() const {
  if (event_ == nullptr) return true;  // never recorded: complete
  MOE_FAIL("Event::query: this build has no CUDA");
}
void Event::synchronize() const {
  MOE_FAIL("Event::synchronize: this build has no CUDA");
}

#endif

Event::Event(Event&& other) noexcept
    : event_(std::exchange(other.event_, nullptr)),
      device_index_(std::exchange(other.device_index_, -1)) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    Event old(std::move(*this));  // destroys our event at the end of this scope
    event_ = std::exchange(other.event_, nullptr);
    device_index_ = std::exchange(other.device_index_, -1);
  }
  return *this;
}

}  // namespace moe
