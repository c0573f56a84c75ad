// Host conversions between float and the 16-bit storage types (round to nearest even).
#pragma once

#include <cstdint>
#include <cstring>

namespace flashattn::detail {

struct half_t {
  uint16_t bits;
};
struct bfloat16_t {
  uint16_t bits;
};

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float to_float(float x) { return x; }

inline float to_float(bfloat16_t x) { return bits_float(static_cast<uint32_t>(x.bits) << 16); }

inline float to_float(half_t x) {
  const uint32_t sign = static_cast<uint32_t>(x.bits & 0x8000u) << 16;
  const uint32_t exp = (x.bits >> 10) & 0x1fu;
  const uint32_t mant = x.bits & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp != 0) return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
  // zero or subnormal: mant · 2^-24
  const float magnitude = static_cast<float>(mant) * 5.9604644775390625e-8f;
  return sign ? -magnitude : magnitude;
}

template <class T>
T from_float(float f);

template <>
inline float from_float<float>(float f) {
  return f;
}

template <>
inline bfloat16_t from_float<bfloat16_t>(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16_t{static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bfloat16_t{static_cast<uint16_t>(u >> 16)};
}

template <>
inline half_t from_float<half_t>(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return half_t{static_cast<uint16_t>(sign | 0x7e00u)};  // nan
  if (abs >= 0x477ff000u) return half_t{static_cast<uint16_t>(sign | 0x7c00u)};  // rounds to inf
  if (abs >= 0x38800000u) {  // normal half
    uint32_t m = abs + 0xfffu + ((abs >> 13) & 1u) - (112u << 23);
    return half_t{static_cast<uint16_t>(sign | (m >> 13))};
  }
  // subnormal half (or zero): value / 2^-24 rounded to nearest even
  const float scaled = bits_float(abs) * 16777216.0f;  // exact: power of two
  uint32_t q = static_cast<uint32_t>(scaled);
  const float rem = scaled - static_cast<float>(q);
  if (rem > 0.5f || (rem == 0.5f && (q & 1u))) ++q;
  return half_t{static_cast<uint16_t>(sign | q)};
}

}  // namespace flashattn::detail
