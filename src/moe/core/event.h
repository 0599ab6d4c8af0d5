// CUDA events without exposing CUDA headers: order work between streams (communication on its
// own stream, compute on another) and ask whether work has completed. An Event is created on
// first record (on the device of that record), timing disabled; moving it transfers ownership.
// In a build without CUDA every operation but the constructor and destructor throws.
#pragma once

#include "moe/core/stream.h"

struct CUevent_st;

namespace moe {

using EventHandle = CUevent_st*;

class Event {
 public:
  Event() = default;
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // Records the work queued so far on `stream` (of device `device_index`).
  void record(int device_index, StreamHandle stream);
  // Makes `stream` wait (on the device, the host goes on) until the recorded work has
  // completed. An event never recorded is complete.
  void block(StreamHandle stream) const;
  // True once the recorded work has completed (or if nothing was recorded); never blocks.
  bool query() const;
  // Blocks the calling thread until the recorded work has completed.
  void synchronize() const;

  bool recorded() const { return event_ != nullptr; }
  int device_index() const { return device_index_; }
  EventHandle handle() const { return event_; }

 private:
  EventHandle event_ = nullptr;
  int device_index_ = -1;
};

}  // namespace moe
