// Where a tensor lives: the host, or one CUDA device by index.
#pragma once

#include <ostream>
#include <string>

#include "moe/core/error.h"

namespace moe {

enum class DeviceType : unsigned char { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::CPU, 0}; }
  static constexpr Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  constexpr bool is_cpu() const { return type == DeviceType::CPU; }
  constexpr bool is_cuda() const { return type == DeviceType::CUDA; }
  friend constexpr bool operator==(Device a, Device b) {
    return a.type == b.type && (a.type == DeviceType::CPU || a.index == b.index);
  }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

inline std::ostream& operator<<(std::ostream& out, Device d) { return out << d.str(); }

// Whether this build has CUDA support compiled in, and how many devices the driver sees
// (0 on a machine without a GPU or a build without CUDA).
bool cuda_built();
int cuda_device_count();

}  // namespace moe

// Device dispatch in op entry points: the argument runs in CUDA builds; a CPU-only build
// cannot hold CUDA tensors, so reaching it there is an error naming the cause.
//   if (x.is_cuda()) { MOE_CUDA_ONLY(return gemm_cuda(x, w);) }
#if MOE_WITH_CUDA
#define MOE_CUDA_ONLY(...) __VA_ARGS__
#else
#define MOE_CUDA_ONLY(...) MOE_FAIL("a CUDA tensor reached a build without CUDA");
#endif
