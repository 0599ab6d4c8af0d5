#include "moe/core/stream.h"

#include <map>

#include "moe/core/allocator.h"
#include "moe/core/error.h"

#if MOE_WITH_CUDA
#include "moe/core/cuda_utils.h"
#endif

namespace moe {

#if MOE_WITH_CUDA
namespace {
struct ThreadStreams {
  std::map<int, cudaStream_t> owned;    // created by this thread, destroyed at thread exit
  std::map<int, cudaStream_t> current;  // overrides set by StreamGuard
  ~ThreadStreams() {
    for (auto& [device, stream] : owned) {
      // Blocks freed on this stream are cached under it; once its work is done they may
      // serve any stream.
      if (cudaSetDevice(device) == cudaSuccess && cudaStreamSynchronize(stream) == cudaSuccess)
        release_stream_blocks(device, reinterpret_cast<StreamHandle>(stream));
      (void)cudaStreamDestroy(stream);
    }
  }
};
thread_local ThreadStreams tls_streams;
}  // namespace

StreamHandle current_stream(int device_index) {
  MOE_CUDA_CHECK(cudaSetDevice(device_index));
  auto it = tls_streams.current.find(device_index);
  if (it != tls_streams.current.end()) return reinterpret_cast<StreamHandle>(it->second);
  auto owned = tls_streams.owned.find(device_index);
  if (owned == tls_streams.owned.end()) {
    cudaStream_t stream;
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    owned = tls_streams.owned.emplace(device_index, stream).first;
  }
  return reinterpret_cast<StreamHandle>(owned->second);
}

StreamHandle set_current_stream(int device_index, StreamHandle stream) {
  StreamHandle previous = current_stream(device_index);
  tls_streams.current[device_index] = reinterpret_cast<cudaStream_t>(stream);
  return previous;
}

void synchronize(int device_index) {
  MOE_CUDA_CHECK(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(current_stream(device_index))));
}
#else
StreamHandle current_stream(int) { MOE_FAIL("CUDA stream requested, but this build has no CUDA"); }
StreamHandle set_current_stream(int, StreamHandle) {
  MOE_FAIL("CUDA stream requested, but this build has no CUDA");
}
void synchronize(int) {}
#endif

}  // namespace moe
