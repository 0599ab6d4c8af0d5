// Finite-value checks of loaded weights (weight_checks.h).
#include "moe/checkpoint/weight_checks.h"

#include <cstring>

#include "moe/core/error.h"

namespace moe::checkpoint {

namespace {

template <class Bits>
int64_t first_non_finite_bits(const Tensor& t, Bits exponent_mask) {
  const auto* data = static_cast<const unsigned char*>(t.raw());
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    Bits bits;
    std::memcpy(&bits, data + i * static_cast<int64_t>(sizeof(Bits)), sizeof(Bits));
    if ((bits & exponent_mask) == exponent_mask) return i;
  }
  return -1;
}

}  // namespace

int64_t first_non_finite(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f64:
      return first_non_finite_bits<uint64_t>(t, 0x7ff0000000000000ull);
    case DType::f32:
      return first_non_finite_bits<uint32_t>(t, 0x7f800000u);
    case DType::bf16:
      return first_non_finite_bits<uint16_t>(t, 0x7f80u);
    case DType::f16:
      return first_non_finite_bits<uint16_t>(t, 0x7c00u);
    case DType::fp8_e5m2:
      return first_non_finite_bits<uint8_t>(t, 0x7cu);
    case DType::fp8_e4m3:
      return first_non_finite_bits<uint8_t>(t, 0x7fu);  // NaN only
    default:
      return -1;
  }
}

void check_finite(const Tensor& t, const std::string& name, const std::string& where,
                  const std::string& fused_into, int64_t first_element) {
  const int64_t bad = first_non_finite(t);
  if (bad < 0) return;
  MOE_FAIL("tensor ", name, fused_into.empty() ? "" : " (fused into moecore " + fused_into + ")",
           " in ", where, " holds a non-finite value (NaN or Inf) at element ", first_element + bad,
           "; the checkpoint's weights must be finite");
}

}  // namespace moe::checkpoint
