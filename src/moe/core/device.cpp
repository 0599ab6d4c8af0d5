#include "moe/core/device.h"

#if MOE_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace moe {

bool cuda_built() { return MOE_WITH_CUDA != 0; }

int cuda_device_count() {
#if MOE_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: clear the sticky error
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

}  // namespace moe
