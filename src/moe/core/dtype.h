// Element types: DType enumerates them; bf16 / f16 / fp8_e4m3 / fp8_e5m2 are 1- and 2-byte
// storage types with exact bit-level conversions (round to nearest even) usable on host and
// device; dispatch<...>() turns a runtime DType into a template argument.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>

#include "moe/core/error.h"
#include "moe/core/host_device.h"

namespace moe {

enum class DType : unsigned char { f64, f32, bf16, f16, fp8_e4m3, fp8_e5m2, i64, i32, u8 };

constexpr size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::f64:
    case DType::i64: return 8;
    case DType::f32:
    case DType::i32: return 4;
    case DType::bf16:
    case DType::f16: return 2;
    case DType::fp8_e4m3:
    case DType::fp8_e5m2:
    case DType::u8: return 1;
  }
  return 0;
}

constexpr const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::f64: return "f64";
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::fp8_e4m3: return "fp8_e4m3";
    case DType::fp8_e5m2: return "fp8_e5m2";
    case DType::i64: return "i64";
    case DType::i32: return "i32";
    case DType::u8: return "u8";
  }
  return "?";
}

constexpr bool is_floating(DType dt) {
  return dt != DType::i64 && dt != DType::i32 && dt != DType::u8;
}

inline std::ostream& operator<<(std::ostream& out, DType dt) { return out << dtype_name(dt); }

// ---- bit-level float helpers (host and device) -------------------------------------------

MOE_HD uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
MOE_HD float bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// bfloat16: the top 16 bits of an IEEE float, rounded to nearest even.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  MOE_HD bf16(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  MOE_HD operator float() const { return bits_float(static_cast<uint32_t>(bits) << 16); }
};

// IEEE binary16.
struct f16 {
  uint16_t bits = 0;
  f16() = default;
  MOE_HD f16(float f) {
    uint32_t x = float_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t mag = x & 0x7fffffffu;
    if (mag > 0x7f800000u) { bits = static_cast<uint16_t>(sign | 0x7e00u); return; }
    if (mag >= 0x477ff000u) { bits = static_cast<uint16_t>(sign | 0x7c00u); return; }  // overflow -> inf
    if (mag < 0x38800000u) {  // subnormal or zero in half: scale by 2^24 and round
      float a = bits_float(mag) * 16777216.0f;  // exact: value * 2^24, half subnormal units
      uint32_t r = static_cast<uint32_t>(rintf(a));
      bits = static_cast<uint16_t>(sign | r);
      return;
    }
    uint32_t exp = ((mag >> 23) - 112u) << 10;
    uint32_t mant = mag & 0x7fffffu;
    uint32_t h = exp | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    bits = static_cast<uint16_t>(sign | h);
  }
  MOE_HD operator float() const {
    uint32_t sign = (bits & 0x8000u) << 16;
    uint32_t exp = (bits >> 10) & 0x1fu;
    uint32_t mant = bits & 0x3ffu;
    if (exp == 0) {
      float v = static_cast<float>(mant) * 5.9604644775390625e-08f;  // 2^-24
      return sign ? -v : v;
    }
    if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
    return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  }
};

// OCP fp8 formats. E4M3 (bias 7, max 448, no inf, NaN = S.1111.111); E5M2 (bias 15, IEEE-like).
// Conversion from float saturates to the largest finite value (the convention of the
// FP8 training recipes) and rounds to nearest even.
namespace detail {
template <int kExpBits, int kManBits, int kBias, bool kHasInf>
struct Fp8Codec {
  MOE_HD static float max_finite() {
    if constexpr (kHasInf) return 57344.0f;  // E5M2
    else return 448.0f;                      // E4M3
  }
  MOE_HD static uint8_t encode(float f) {
    uint32_t x = float_bits(f);
    uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80u);
    float a = fabsf(f);
    if (a != a) return static_cast<uint8_t>(sign | (kHasInf ? 0x7f : 0x7f));
    if (a > max_finite()) a = max_finite();
    // Find the fp8 exponent; values below the normal range are multiples of the subnormal step.
    const float min_normal = ldexpf(1.0f, 1 - kBias);
    const float sub_step = ldexpf(1.0f, 1 - kBias - kManBits);
    if (a < min_normal) {
      uint32_t m = static_cast<uint32_t>(rintf(a / sub_step));  // rint: nearest even
      return static_cast<uint8_t>(sign | m);                    // m may reach the first normal
    }
    int e;
    float frac = frexpf(a, &e);  // a = frac * 2^e, frac in [0.5, 1)
    int biased = e - 1 + kBias;
    float scaled = (frac * 2.0f - 1.0f) * static_cast<float>(1 << kManBits);
    uint32_t m = static_cast<uint32_t>(rintf(scaled));
    if (m == (1u << kManBits)) { m = 0; ++biased; }
    uint32_t code = (static_cast<uint32_t>(biased) << kManBits) | m;
    const uint32_t max_code = kHasInf ? 0x7bu : 0x7eu;
    if (code > max_code) code = max_code;
    return static_cast<uint8_t>(sign | code);
  }
  MOE_HD static float decode(uint8_t b) {
    const bool neg = b & 0x80;
    const uint32_t e = (b >> kManBits) & ((1u << kExpBits) - 1);
    const uint32_t m = b & ((1u << kManBits) - 1);
    float v;
    if (kHasInf && e == (1u << kExpBits) - 1) {
      v = m ? NAN : INFINITY;
    } else if (!kHasInf && e == (1u << kExpBits) - 1 && m == (1u << kManBits) - 1) {
      v = NAN;
    } else if (e == 0) {
      v = ldexpf(static_cast<float>(m), 1 - kBias - kManBits);
    } else {
      v = ldexpf(1.0f + static_cast<float>(m) / static_cast<float>(1 << kManBits),
                 static_cast<int>(e) - kBias);
    }
    return neg ? -v : v;
  }
};
}  // namespace detail

struct fp8_e4m3 {
  uint8_t bits = 0;
  fp8_e4m3() = default;
  MOE_HD fp8_e4m3(float f) : bits(detail::Fp8Codec<4, 3, 7, false>::encode(f)) {}
  MOE_HD operator float() const { return detail::Fp8Codec<4, 3, 7, false>::decode(bits); }
};

struct fp8_e5m2 {
  uint8_t bits = 0;
  fp8_e5m2() = default;
  MOE_HD fp8_e5m2(float f) : bits(detail::Fp8Codec<5, 2, 15, true>::encode(f)) {}
  MOE_HD operator float() const { return detail::Fp8Codec<5, 2, 15, true>::decode(bits); }
};

template <class T> struct DTypeOf;
template <> struct DTypeOf<double> { static constexpr DType value = DType::f64; };
template <> struct DTypeOf<float> { static constexpr DType value = DType::f32; };
template <> struct DTypeOf<bf16> { static constexpr DType value = DType::bf16; };
template <> struct DTypeOf<f16> { static constexpr DType value = DType::f16; };
template <> struct DTypeOf<fp8_e4m3> { static constexpr DType value = DType::fp8_e4m3; };
template <> struct DTypeOf<fp8_e5m2> { static constexpr DType value = DType::fp8_e5m2; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::i64; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::i32; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::u8; };
template <class T> inline constexpr DType dtype_of = DTypeOf<T>::value;

template <DType D> struct TypeOf;
template <> struct TypeOf<DType::f64> { using type = double; };
template <> struct TypeOf<DType::f32> { using type = float; };
template <> struct TypeOf<DType::bf16> { using type = bf16; };
template <> struct TypeOf<DType::f16> { using type = f16; };
template <> struct TypeOf<DType::fp8_e4m3> { using type = fp8_e4m3; };
template <> struct TypeOf<DType::fp8_e5m2> { using type = fp8_e5m2; };
template <> struct TypeOf<DType::i64> { using type = int64_t; };
template <> struct TypeOf<DType::i32> { using type = int32_t; };
template <> struct TypeOf<DType::u8> { using type = uint8_t; };

// Calls fn.template operator()<T>() with T the C++ type of `dt`, if `dt` is one of `Allowed`;
// otherwise throws an error that lists the allowed dtypes. `what` names the caller.
//   dispatch<DType::f32, DType::f64>(x.dtype(), "gemm", [&]<class T>() { ... });
template <DType... Allowed, class Fn>
decltype(auto) dispatch(DType dt, const char* what, Fn&& fn) {
  constexpr DType kFirst = [] { DType all[] = {Allowed...}; return all[0]; }();
  using R = decltype(fn.template operator()<typename TypeOf<kFirst>::type>());
  if constexpr (std::is_void_v<R>) {
    bool done = ((dt == Allowed ? (fn.template operator()<typename TypeOf<Allowed>::type>(), true)
                                : false) ||
                 ...);
    if (!done) {
      MOE_FAIL(what, ": dtype ", dt, " is not supported; allowed: ",
               detail::concat((std::string(dtype_name(Allowed)) + " ")...));
    }
  } else {
    R result{};
    bool done = ((dt == Allowed
                      ? (result = fn.template operator()<typename TypeOf<Allowed>::type>(), true)
                      : false) ||
                 ...);
    if (!done) {
      MOE_FAIL(what, ": dtype ", dt, " is not supported; allowed: ",
               detail::concat((std::string(dtype_name(Allowed)) + " ")...));
    }
    return result;
  }
}

// dispatch over the floating-point dtypes the ops compute in: f64 (the reference), f32, bf16, f16.
template <class Fn>
decltype(auto) dispatch_float(DType dt, const char* what, Fn&& fn) {
  return dispatch<DType::f64, DType::f32, DType::bf16, DType::f16>(dt, what, std::forward<Fn>(fn));
}

}  // namespace moe
