#include "moe/core/trace_range.h"

#include "moe/core/trace_recorder.h"

#if MOE_WITH_CUDA
#include <nvtx3/nvToolsExt.h>  // header-only NVTX 3 (the CUDA toolkit's)
#endif

namespace moe {

#if MOE_WITH_CUDA
TraceRange::TraceRange(const char* name) {
  nvtxRangePushA(name);
  TraceRecorder::open(name);
}
TraceRange::~TraceRange() {
  TraceRecorder::close();
  nvtxRangePop();
}
#else
TraceRange::TraceRange(const char* name) {
  TraceRecorder::open(name);
}
TraceRange::~TraceRange() {
  TraceRecorder::close();
}
#endif

}  // namespace moe
