// Conversions between double/float and the 16-bit storage formats, written for the tests from
// the definitions of the formats (not from the library's numeric.h, which they are checked
// against in test_numeric.cpp):
//   IEEE binary16: 1 sign, 5 exponent (bias 15), 10 fraction bits; subnormal quantum 2^-24.
//   bfloat16:      1 sign, 8 exponent (bias 127), 7 fraction bits: the top half of a binary32.
// Rounding is to nearest, ties to even (std::nearbyint in the default rounding mode).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fa_test {

// Rounds x to the nearest multiple of 2^exp (ties to even). Exact for the magnitudes we use.
inline double round_to_quantum(double x, int exp) {
  return std::ldexp(std::nearbyint(std::ldexp(x, -exp)), exp);
}

// ---- binary16 ---------------------------------------------------------------------------------
inline double round_f16(double x) {
  if (std::isnan(x) || std::isinf(x) || x == 0.0) return x;
  const double a = std::fabs(x);
  // The largest finite half is 65504 = (2 − 2^-10)·2^15; the midpoint to the next (2^16) is 65520,
  // which rounds to even, i.e. to 2^16: overflow.
  if (a >= 65520.0) return std::copysign(INFINITY, x);
  int e;
  std::frexp(a, &e);  // a = m·2^e, m in [0.5, 1): the leading bit is 2^(e−1)
  const int lead = e - 1;
  const int quantum = lead < -14 ? -24 : lead - 10;
  return std::copysign(round_to_quantum(a, quantum), x);
}

inline uint16_t f16_bits(double x) {
  const double r = round_f16(x);
  const uint16_t sign = std::signbit(r) ? 0x8000u : 0u;
  if (std::isnan(r)) return static_cast<uint16_t>(sign | 0x7e00u);
  const double a = std::fabs(r);
  if (std::isinf(a)) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < std::ldexp(1.0, -14)) {  // subnormal or zero: a = n · 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::ldexp(a, 24)));
  }
  int e;
  const double m = std::frexp(a, &e);  // a = (2m)·2^(e−1), 2m in [1, 2)
  const uint32_t biased = static_cast<uint32_t>(e - 1 + 15);
  const uint32_t frac = static_cast<uint32_t>(std::ldexp(2.0 * m - 1.0, 10));
  return static_cast<uint16_t>(sign | (biased << 10) | frac);
}

inline double f16_value(uint16_t bits) {
  const double sign = (bits & 0x8000u) ? -1.0 : 1.0;
  const int biased = (bits >> 10) & 0x1f;
  const int frac = bits & 0x3ff;
  if (biased == 0x1f) return frac ? NAN : sign * INFINITY;
  if (biased == 0) return sign * std::ldexp(static_cast<double>(frac), -24);
  return sign * std::ldexp(1.0 + frac / 1024.0, biased - 15);
}

// ---- bfloat16 ---------------------------------------------------------------------------------
inline double round_bf16(double x) {
  if (std::isnan(x) || std::isinf(x) || x == 0.0) return x;
  const double a = std::fabs(x);
  // Largest finite: (2 − 2^-7)·2^127; the midpoint to 2^128 is (2 − 2^-8)·2^127 (ties to even:
  // to 2^128, overflow).
  if (a >= std::ldexp(2.0 - std::ldexp(1.0, -8), 127)) return std::copysign(INFINITY, x);
  int e;
  std::frexp(a, &e);
  const int lead = e - 1;
  const int quantum = lead < -126 ? -133 : lead - 7;
  return std::copysign(round_to_quantum(a, quantum), x);
}

inline uint16_t bf16_bits(double x) {
  if (std::isnan(x)) return std::signbit(x) ? 0xffc0u : 0x7fc0u;
  const float f = static_cast<float>(round_bf16(x));  // exact: a bf16 value is a binary32 value
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return static_cast<uint16_t>(u >> 16);
}

inline double bf16_value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace fa_test
