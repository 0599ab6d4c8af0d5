#include "moe/core/device_activity.h"

#include <algorithm>

#include "moe/core/error.h"

#if MOE_WITH_CUDA
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>
#include <cupti.h>
#include <cxxabi.h>
#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "moe/core/trace_recorder.h"
#endif

namespace moe {

#if !MOE_WITH_CUDA

std::string DeviceActivityRecorder::start() {
  return "this build has no CUDA: only the host's ranges are recorded";
}
std::vector<DeviceActivity> DeviceActivityRecorder::stop(int64_t* dropped) {
  if (dropped) *dropped = 0;
  return {};
}
void start_profiler_capture() {}
void stop_profiler_capture() {}

#else

namespace {

// The CUPTI entry points moecore uses, resolved from the library loaded at the first start().
struct Cupti {
  void* library = nullptr;
  decltype(&cuptiActivityRegisterCallbacks) register_callbacks = nullptr;
  decltype(&cuptiActivityRegisterTimestampCallback) register_timestamp = nullptr;
  decltype(&cuptiActivityEnable) enable = nullptr;
  decltype(&cuptiActivityDisable) disable = nullptr;
  decltype(&cuptiActivityFlushAll) flush_all = nullptr;
  decltype(&cuptiActivityGetNextRecord) next_record = nullptr;
  decltype(&cuptiActivityGetNumDroppedRecords) dropped_records = nullptr;
  decltype(&cuptiActivityPushExternalCorrelationId) push_external = nullptr;
  decltype(&cuptiActivityPopExternalCorrelationId) pop_external = nullptr;
  decltype(&cuptiGetTimestamp) timestamp = nullptr;
  decltype(&cuptiGetResultString) result_string = nullptr;
  bool callbacks_registered = false;
  bool timestamps_on_trace_clock = false;  // CUPTI calls trace_clock_ns() for its timestamps
};

// What the buffers CUPTI hands back hold, before the launches and ranges are joined to them.
struct RawRecords {
  std::vector<DeviceActivity> activities;
  std::vector<uint32_t> activity_correlation;              // beside activities
  std::unordered_map<uint32_t, int64_t> launch_ns;         // API call's correlation -> begin
  std::unordered_map<uint32_t, uint64_t> range_of_launch;  // correlation -> external id
  int64_t dropped = 0;
};

std::mutex g_mutex;  // guards everything below (CUPTI calls the buffer callbacks on its thread)
Cupti g_cupti;
bool g_recording = false;
int64_t g_clock_offset_ns = 0;  // added to CUPTI's timestamps to reach the trace clock
RawRecords g_raw;

constexpr size_t kBufferBytes = 8u << 20;
constexpr size_t kBufferAlign = 8;

std::string cupti_error(CUptiResult r) {
  const char* s = nullptr;
  if (g_cupti.result_string) g_cupti.result_string(r, &s);
  return s ? s : "CUPTI error " + std::to_string(static_cast<int>(r));
}

// The library of the toolkit this build was made with, then any; CUDA's own folders last.
std::string load_cupti(Cupti& c) {
  const std::string major = std::to_string(CUDART_VERSION / 1000);
  const std::vector<std::string> names = {"libcupti.so." + major,
                                          "libcupti.so",
                                          "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so." + major,
                                          "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so",
                                          "/usr/local/cuda/lib64/libcupti.so." + major,
                                          "/usr/local/cuda/lib/libcupti.so." + major};
  std::string tried;
  for (const std::string& name : names) {
    c.library = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (c.library) break;
    tried += (tried.empty() ? "" : ", ") + name;
  }
  if (!c.library)
    return "CUPTI (the CUDA toolkit's libcupti) was not found (tried " + tried +
           "): only the host's ranges are recorded";
  const auto resolve = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)> >(dlsym(c.library, symbol));
    return fn != nullptr;
  };
  const bool all =
      resolve(c.register_callbacks, "cuptiActivityRegisterCallbacks") &&
      resolve(c.enable, "cuptiActivityEnable") && resolve(c.disable, "cuptiActivityDisable") &&
      resolve(c.flush_all, "cuptiActivityFlushAll") &&
      resolve(c.next_record, "cuptiActivityGetNextRecord") &&
      resolve(c.dropped_records, "cuptiActivityGetNumDroppedRecords") &&
      resolve(c.push_external, "cuptiActivityPushExternalCorrelationId") &&
      resolve(c.pop_external, "cuptiActivityPopExternalCorrelationId") &&
      resolve(c.timestamp, "cuptiGetTimestamp") && resolve(c.result_string, "cuptiGetResultString");
  resolve(c.register_timestamp, "cuptiActivityRegisterTimestampCallback");  // CUDA 12.4 on
  if (!all) {
    dlclose(c.library);
    c = Cupti{};
    return "the CUPTI library found lacks the activity API moecore uses: only the host's "
           "ranges are recorded";
  }
  return "";
}

// "void ns::kernel<T, 4>(T const*, ...)" -> "ns::kernel<T, 4>": the demangled name without its
// return type and parameters, cut to a length a timeline can show.
std::string kernel_name(const char* mangled) {
  if (!mangled) return "kernel";
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled ? demangled : mangled;
  std::free(demangled);
  int depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<') ++depth;
    if (name[i] == '>') --depth;
    if (name[i] == '(' && depth == 0) {
      name.resize(i);
      break;
    }
  }
  if (name.rfind("void ", 0) == 0) name.erase(0, 5);
  constexpr size_t kMaxName = 160;
  if (name.size() > kMaxName) name = name.substr(0, kMaxName - 3) + "...";
  return name;
}

const char* copy_kind_name(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD:
      return "memcpy HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH:
      return "memcpy DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD:
      return "memcpy DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH:
      return "memcpy HtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP:
      return "memcpy PtoP";
    default:
      return "memcpy";
  }
}

// A kernel, copy or memset record's common fields (the CUPTI structs share their names).
template <class Record>
void add_activity(const Record& r, DeviceActivity::Kind kind, std::string name, int64_t bytes = 0) {
  DeviceActivity a;
  a.kind = kind;
  a.name = std::move(name);
  a.begin_ns = static_cast<int64_t>(r.start) + g_clock_offset_ns;
  a.end_ns = static_cast<int64_t>(r.end) + g_clock_offset_ns;
  a.device = static_cast<int>(r.deviceId);
  a.stream = r.streamId;
  a.bytes = bytes;
  g_raw.activities.push_back(std::move(a));
  g_raw.activity_correlation.push_back(r.correlationId);
}

// One record of a completed buffer into g_raw (g_mutex held).
void take_record(const CUpti_Activity* record) {
  switch (record->kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
      add_activity(*k, DeviceActivity::Kind::kernel, kernel_name(k->name));
      break;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
      add_activity(*m, DeviceActivity::Kind::memcpy, copy_kind_name(m->copyKind),
                   static_cast<int64_t>(m->bytes));
      break;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
      add_activity(*m, DeviceActivity::Kind::memset, "memset", static_cast<int64_t>(m->bytes));
      break;
    }
    case CUPTI_ACTIVITY_KIND_RUNTIME:
    case CUPTI_ACTIVITY_KIND_DRIVER: {
      const auto* api = reinterpret_cast<const CUpti_ActivityAPI*>(record);
      g_raw.launch_ns.emplace(api->correlationId,
                              static_cast<int64_t>(api->start) + g_clock_offset_ns);
      break;
    }
    case CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION: {
      const auto* e = reinterpret_cast<const CUpti_ActivityExternalCorrelation*>(record);
      if (e->externalKind == CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0)
        g_raw.range_of_launch.emplace(e->correlationId, e->externalId);
      break;
    }
    default:
      break;
  }
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(kBufferAlign, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext context, uint32_t stream_id, uint8_t* buffer,
                               size_t /*size*/, size_t valid_size) {
  {
    const std::lock_guard<std::mutex> lock(g_mutex);
    CUpti_Activity* record = nullptr;
    while (g_cupti.next_record(buffer, valid_size, &record) == CUPTI_SUCCESS) take_record(record);
    size_t dropped = 0;
    if (g_cupti.dropped_records(context, stream_id, &dropped) == CUPTI_SUCCESS)
      g_raw.dropped += static_cast<int64_t>(dropped);
  }
  std::free(buffer);
}

uint64_t CUPTIAPI trace_clock_timestamp() {
  return static_cast<uint64_t>(trace_clock_ns());
}

// The host recorder's hooks: launches inside a recorded range carry its span id.
void push_range(uint64_t id) {
  g_cupti.push_external(CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0, id);
}
void pop_range() {
  uint64_t last = 0;
  g_cupti.pop_external(CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0, &last);
}

constexpr CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
                                         CUPTI_ACTIVITY_KIND_MEMCPY,
                                         CUPTI_ACTIVITY_KIND_MEMSET,
                                         CUPTI_ACTIVITY_KIND_RUNTIME,
                                         CUPTI_ACTIVITY_KIND_DRIVER,
                                         CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION};

}  // namespace

std::string DeviceActivityRecorder::start() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_recording) return "another recording of this process is in progress";
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    return "no CUDA device: only the host's ranges are recorded";
  }
  if (!g_cupti.library)
    if (std::string why = load_cupti(g_cupti); !why.empty()) return why;
  if (!g_cupti.callbacks_registered) {
    // CUPTI's own timestamps (CLOCK_REALTIME on Linux) unless it takes ours; a timestamp
    // callback must be registered before any kind is enabled.
    g_cupti.timestamps_on_trace_clock =
        g_cupti.register_timestamp &&
        g_cupti.register_timestamp(trace_clock_timestamp) == CUPTI_SUCCESS;
    if (const CUptiResult r = g_cupti.register_callbacks(buffer_requested, buffer_completed);
        r != CUPTI_SUCCESS)
      return "CUPTI refused its buffers (" + cupti_error(r) +
             "): only the host's ranges are "
             "recorded";
    g_cupti.callbacks_registered = true;
  }
  g_clock_offset_ns = 0;
  if (!g_cupti.timestamps_on_trace_clock) {  // the midpoint of two host reads around CUPTI's
    const int64_t before = trace_clock_ns();
    uint64_t cupti_now = 0;
    g_cupti.timestamp(&cupti_now);
    const int64_t after = trace_clock_ns();
    g_clock_offset_ns = before + (after - before) / 2 - static_cast<int64_t>(cupti_now);
  }
  g_raw = RawRecords{};
  for (const CUpti_ActivityKind kind : kKinds) {
    if (const CUptiResult r = g_cupti.enable(kind); r != CUPTI_SUCCESS) {
      for (const CUpti_ActivityKind k : kKinds) g_cupti.disable(k);
      return "CUPTI could not record activity kind " + std::to_string(static_cast<int>(kind)) +
             " (" + cupti_error(r) + "): only the host's ranges are recorded";
    }
  }
  TraceRecorder::set_hooks(TraceRangeHooks{push_range, pop_range});
  g_recording = true;
  return "";
}

std::vector<DeviceActivity> DeviceActivityRecorder::stop(int64_t* dropped) {
  if (dropped) *dropped = 0;
  {
    const std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_recording) return {};
  }
  cudaDeviceSynchronize();  // the window's work has run and left its records
  TraceRecorder::set_hooks(TraceRangeHooks{});
  for (const CUpti_ActivityKind kind : kKinds) g_cupti.disable(kind);
  g_cupti.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);  // calls buffer_completed (no lock held)
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_recording = false;
  RawRecords raw = std::move(g_raw);
  g_raw = RawRecords{};
  for (size_t i = 0; i < raw.activities.size(); ++i) {
    const uint32_t correlation = raw.activity_correlation[i];
    if (const auto it = raw.launch_ns.find(correlation); it != raw.launch_ns.end())
      raw.activities[i].launch_ns = it->second;
    if (const auto it = raw.range_of_launch.find(correlation); it != raw.range_of_launch.end())
      raw.activities[i].range_id = it->second;
  }
  std::stable_sort(
      raw.activities.begin(), raw.activities.end(),
      [](const DeviceActivity& a, const DeviceActivity& b) { return a.begin_ns < b.begin_ns; });
  if (dropped) *dropped = raw.dropped;
  return std::move(raw.activities);
}

void start_profiler_capture() {
  if (const cudaError_t e = cudaProfilerStart(); e != cudaSuccess)
    MOE_FAIL("cudaProfilerStart failed: ", cudaGetErrorString(e));
}

void stop_profiler_capture() {
  if (const cudaError_t e = cudaProfilerStop(); e != cudaSuccess)
    MOE_FAIL("cudaProfilerStop failed: ", cudaGetErrorString(e));
}

#endif

}  // namespace moe
