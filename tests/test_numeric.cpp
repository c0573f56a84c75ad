// The tests' own fp16/bf16 conversions (half.h, the oracle's) against known values, and the
// library's internal conversions (src/common/numeric.h, used by the CPU implementation to read
// and write fp16/bf16 tensors) against the tests' ones over many floats.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "common/numeric.h"
#include "half.h"

namespace fa_test {
namespace {

namespace lib = flashattn::detail;

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(HalfConversions, KnownValues) {
  EXPECT_EQ(f16_bits(1.0), 0x3c00u);
  EXPECT_EQ(f16_bits(-2.0), 0xc000u);
  EXPECT_EQ(f16_bits(65504.0), 0x7bffu);
  EXPECT_EQ(f16_bits(65519.0), 0x7bffu);   // below the midpoint to 2^16
  EXPECT_EQ(f16_bits(65520.0), 0x7c00u);   // the midpoint rounds to even: infinity
  EXPECT_EQ(f16_bits(0.1), 0x2e66u);
  EXPECT_EQ(f16_bits(std::ldexp(1.0, -24)), 0x0001u);  // smallest subnormal
  EXPECT_EQ(f16_bits(std::ldexp(1.0, -25)), 0x0000u);  // tie to even: 0
  EXPECT_EQ(f16_bits(std::ldexp(3.0, -25)), 0x0002u);  // tie to even: 2·2^-24
  EXPECT_EQ(f16_bits(std::ldexp(1.0, -14)), 0x0400u);  // smallest normal
  EXPECT_EQ(f16_bits(1.0 + std::ldexp(1.0, -11)), 0x3c00u);      // tie to even (down)
  EXPECT_EQ(f16_bits(1.0 + 3 * std::ldexp(1.0, -11)), 0x3c02u);  // tie to even (up)
  EXPECT_EQ(f16_value(0x3555), 0.333251953125);
  EXPECT_TRUE(std::isnan(f16_value(0x7e00)));
  EXPECT_EQ(bf16_bits(1.0), 0x3f80u);
  EXPECT_EQ(bf16_bits(3.140625), 0x4049u);
  EXPECT_EQ(bf16_bits(1.0 + std::ldexp(1.0, -8)), 0x3f80u);      // tie to even (down)
  EXPECT_EQ(bf16_bits(1.0 + 3 * std::ldexp(1.0, -8)), 0x3f82u);  // tie to even (up)
  EXPECT_EQ(bf16_bits(-0.0), 0x8000u);
  EXPECT_EQ(bf16_bits(3.0e38), 0x7f62u);
  EXPECT_EQ(bf16_bits(3.4e38), 0x7f80u);  // above the largest finite bf16's midpoint: infinity
  EXPECT_EQ(bf16_value(0xc2f7), -123.5);
}

// Every f16 value round-trips; random floats (normal, subnormal, huge, ties) agree with the
// library's conversions bit for bit.
TEST(HalfConversions, AgreeWithLibraryConversions) {
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const double v = f16_value(h);
    const float lv = lib::to_float(lib::half_t{h});
    if (std::isnan(v)) {
      EXPECT_TRUE(std::isnan(lv));
      continue;
    }
    ASSERT_EQ(f16_bits(v), h);
    ASSERT_EQ(static_cast<double>(lv), v) << std::hex << b;
    ASSERT_EQ(static_cast<double>(lib::to_float(lib::bfloat16_t{h})), bf16_value(h)) << std::hex << b;
  }
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<uint32_t> any32;
  for (int n = 0; n < 2000000; ++n) {
    uint32_t u = any32(rng);
    if (n % 4 == 1) u = (u & 0x8000ffffu) | (static_cast<uint32_t>(100 + n % 60) << 23);  // near fp16 range
    if (n % 4 == 2) u = (u & 0xffffe000u) | 0x1000u;  // exact fp16 ties
    if (n % 4 == 3) u = (u & 0xffff0000u) | 0x8000u;  // exact bf16 ties
    const float f = bits_to_float(u);
    if (std::isnan(f)) continue;
    ASSERT_EQ(lib::from_float<lib::half_t>(f).bits, f16_bits(f)) << std::hex << u;
    ASSERT_EQ(lib::from_float<lib::bfloat16_t>(f).bits, bf16_bits(f)) << std::hex << u;
  }
}

}  // namespace
}  // namespace fa_test
