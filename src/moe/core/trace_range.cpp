#include "moe/core/trace_range.h"

#if MOE_WITH_CUDA
#include <nvtx3/nvToolsExt.h>  // header-only NVTX 3 (the CUDA toolkit's)
#endif

namespace moe {

#if MOE_WITH_CUDA
TraceRange::TraceRange(const char* name) {
  nvtxRangePushA(name);
}
TraceRange::~TraceRange() {
  nvtxRangePop();
}
#else
TraceRange::TraceRange(const char*) {}
TraceRange::~TraceRange() {}
#endif

}  // namespace moe
