#include "moe/core/trace_recorder.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>

namespace moe {
namespace {

std::atomic<bool> g_recording{false};
std::atomic<uint64_t> g_generation{0};  // which recording a frame belongs to
std::atomic<int> g_next_thread{0};
std::atomic<uint64_t> g_next_id{1};
std::atomic<void (*)(uint64_t)> g_on_open{nullptr};
std::atomic<void (*)()> g_on_close{nullptr};
std::mutex g_mutex;  // guards g_spans and the start / stop transitions
std::vector<TraceSpan> g_spans;

// A range this thread opened while recording.
struct Frame {
  std::string name;
  int64_t begin_ns;
  int depth;
  uint64_t generation;
  uint64_t id;
  void (*on_close)();  // the hook to call at close (the one set when the range opened)
};

struct ThreadState {
  int depth = 0;  // ranges open on this thread, recorded or not (matches closes to opens)
  int number = -1;
  std::vector<Frame> frames;
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

}  // namespace

int64_t trace_clock_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool TraceRecorder::start() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_recording.load()) return false;
  g_spans.clear();
  g_generation.fetch_add(1);
  g_next_id.store(1);
  g_recording.store(true);
  return true;
}

std::vector<TraceSpan> TraceRecorder::stop() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_recording.store(false);
  std::vector<TraceSpan> spans = std::move(g_spans);
  g_spans.clear();
  std::stable_sort(spans.begin(), spans.end(), [](const TraceSpan& a, const TraceSpan& b) {
    return a.begin_ns != b.begin_ns ? a.begin_ns < b.begin_ns : a.depth < b.depth;
  });
  return spans;
}

void TraceRecorder::set_hooks(TraceRangeHooks hooks) {
  g_on_open.store(hooks.on_open);
  g_on_close.store(hooks.on_close);
}

bool TraceRecorder::recording() {
  return g_recording.load(std::memory_order_relaxed);
}

void TraceRecorder::open(const char* name) {
  ThreadState& t = thread_state();
  const int depth = t.depth++;
  if (!recording()) return;
  const uint64_t id = g_next_id.fetch_add(1);
  void (*on_open)(uint64_t) = g_on_open.load();
  void (*on_close)() = on_open ? g_on_close.load() : nullptr;
  if (on_open) on_open(id);
  t.frames.push_back(Frame{name, trace_clock_ns(), depth, g_generation.load(), id, on_close});
}

void TraceRecorder::close() {
  ThreadState& t = thread_state();
  if (t.depth == 0) return;  // unbalanced (cannot happen through TraceRange)
  const int depth = --t.depth;
  if (t.frames.empty() || t.frames.back().depth != depth) return;  // opened before start()
  Frame frame = std::move(t.frames.back());
  t.frames.pop_back();
  const int64_t end_ns = trace_clock_ns();
  if (frame.on_close) frame.on_close();
  if (t.number < 0) t.number = g_next_thread.fetch_add(1);
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_recording.load() || frame.generation != g_generation.load()) return;
  g_spans.push_back(
      TraceSpan{std::move(frame.name), frame.begin_ns, end_ns, t.number, depth, frame.id});
}

}  // namespace moe
