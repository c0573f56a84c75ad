// Dropout: the Philox4x32-10 generator (known-answer vectors), the mask mapping of
// docs/dropout.md (re-implemented here from the document; the library's element function and
// its 8-a-call dropout_keep_bits are checked against it), the keep fraction and the uniformity of
// the 16-bit numbers, seeds/offsets, and forward/backward against the reference given the mask.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cases.h"
#include "common/philox.h"
#include "harness.h"
#include "shared_cases.h"

namespace fa_test {
namespace {

// ---- (e) Philox4x32-10 known-answer vectors (Random123's kat_vectors) ---------------------------

struct Kat {
  uint32_t ctr[4];
  uint32_t key[2];
  uint32_t expected[4];
};

TEST(Philox, KnownAnswerVectors) {
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& k : kats) {
    const flashattn::Philox4x32Out r =
        flashattn::philox4x32_10(k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3], k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(r.x[i], k.expected[i]) << "word " << i << " of counter " << std::hex << k.ctr[0];
    }
  }
}

// ---- (f) The mapping of docs/dropout.md, written from the document ----------------------------

uint16_t doc_uint16(uint64_t seed, uint64_t offset, int64_t b, int64_t h, int64_t heads_q,
                    int64_t i, int64_t j) {
  // 1. key = (lo32(seed), hi32(seed))
  const uint32_t k0 = static_cast<uint32_t>(seed & 0xffffffffu);
  const uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  // 2. r = i mod 16, c = j mod 16, lane = (r mod 8)·4 + (c mod 8) div 2,
  //    slot = (c div 8)·4 + (r div 8)·2 + (c mod 2)
  const int64_t r = i % 16, c = j % 16;
  const int64_t lane = (r % 8) * 4 + (c % 8) / 2;
  const int64_t slot = (c / 8) * 4 + (r / 8) * 2 + (c % 2);
  // 3. c0 = (j div 16)·32 + lane, c1 = i div 16, (c2, c3) = (lo32(s), hi32(s)),
  //    s = offset + b·heads_q + h (mod 2^64)
  const uint32_t c0 = static_cast<uint32_t>((j / 16) * 32 + lane);
  const uint32_t c1 = static_cast<uint32_t>(i / 16);
  const uint64_t s = offset + static_cast<uint64_t>(b) * static_cast<uint64_t>(heads_q) +
                     static_cast<uint64_t>(h);
  const uint32_t c2 = static_cast<uint32_t>(s & 0xffffffffu), c3 = static_cast<uint32_t>(s >> 32);
  // 4. u = (x[slot div 2] >> (16·(slot mod 2))) & 0xffff
  const flashattn::Philox4x32Out x = flashattn::philox4x32_10(c0, c1, c2, c3, k0, k1);
  return static_cast<uint16_t>((x.x[slot / 2] >> (16 * (slot % 2))) & 0xffffu);
}

uint32_t doc_threshold(float p) {
  // 5. t = round((1 − p)·65536) in double, clamped to [0, 65536]
  double t = std::round((1.0 - static_cast<double>(p)) * 65536.0);
  return static_cast<uint32_t>(std::min(65536.0, std::max(0.0, t)));
}

TEST(DropoutMapping, MatchesDocumentOnRandomElements) {
  std::mt19937_64 rng(2024);
  std::uniform_int_distribution<uint64_t> any64;
  std::uniform_int_distribution<int64_t> small(0, 40), idx(0, 5000), huge(0, (int64_t{1} << 31) - 2);
  for (int n = 0; n < 20000; ++n) {
    const uint64_t seed = any64(rng), offset = n % 3 == 0 ? any64(rng) : any64(rng) % 1000;
    const int64_t heads_q = 1 + small(rng), h = small(rng) % heads_q, b = small(rng);
    const int64_t i = n % 5 == 0 ? huge(rng) : idx(rng), j = n % 7 == 0 ? huge(rng) : idx(rng);
    ASSERT_EQ(flashattn::dropout_uint16(seed, offset, b, h, heads_q, i, j),
              doc_uint16(seed, offset, b, h, heads_q, i, j))
        << "seed " << seed << " offset " << offset << " b " << b << " h " << h << " heads_q "
        << heads_q << " i " << i << " j " << j;
  }
}

TEST(DropoutMapping, EveryElementOfABlock) {
  // All 16×16 positions of a few blocks: every (lane, slot) combination.
  for (int64_t i = 0; i < 48; ++i) {
    for (int64_t j = 0; j < 48; ++j) {
      ASSERT_EQ(flashattn::dropout_uint16(77, 5, 1, 2, 3, i, j), doc_uint16(77, 5, 1, 2, 3, i, j))
          << i << "," << j;
    }
  }
}

TEST(DropoutMapping, KeepBitsOfALaneAreItsElements) {
  // dropout_keep_bits (the CPU's and the kernels' decisions, 8 a call) against the document's
  // element-by-element mapping, for every lane and slot of random blocks.
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<uint64_t> any64;
  std::uniform_int_distribution<int64_t> block(0, 1 << 20);
  for (int n = 0; n < 200; ++n) {
    const uint64_t seed = any64(rng), offset = any64(rng) % 1000;
    const int64_t heads_q = 3, b = n % 4, h = n % 3, bi = block(rng), bj = block(rng);
    const uint32_t threshold = n % 5 == 0 ? 65536u : static_cast<uint32_t>(any64(rng) % 65536);
    const uint64_t stream = flashattn::detail::dropout_stream(offset, b, h, heads_q);
    for (uint32_t lane = 0; lane < 32; ++lane) {
      const uint32_t bits = flashattn::detail::dropout_keep_bits(
          seed, stream, static_cast<uint32_t>(bi), static_cast<uint32_t>(bj), lane, threshold);
      for (int slot = 0; slot < 8; ++slot) {
        const int64_t i = 16 * bi + lane / 4 + 8 * ((slot >> 1) & 1);
        const int64_t j = 16 * bj + 2 * (lane % 4) + 8 * (slot >> 2) + (slot & 1);
        ASSERT_EQ((bits >> slot) & 1u, doc_uint16(seed, offset, b, h, heads_q, i, j) < threshold)
            << "lane " << lane << " slot " << slot << " block " << bi << "," << bj;
      }
    }
  }
}

TEST(DropoutMapping, TransposedFragmentsFindTheirLaneAndSlot) {
  // The sm90 backward's Sᵀ fragments (keys as rows): each of a lane's 8 elements of a 16×16
  // block names the forward's lane and slot that dropout_coord gives its (query, key).
  int seen[32][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int key_half = 0; key_half < 2; ++key_half) {
      for (int query_half = 0; query_half < 2; ++query_half) {
        for (int query_odd = 0; query_odd < 2; ++query_odd) {
          const int64_t query = 8 * query_half + 2 * t + query_odd, key = g + 8 * key_half;
          const flashattn::detail::DropoutSource src =
              flashattn::detail::transposed_dropout_source(g, t, key_half, query_half, query_odd);
          const flashattn::detail::DropoutCoord want = flashattn::detail::dropout_coord(query, key);
          ASSERT_EQ(src.lane, want.counter0) << "lane " << lane << " query " << query << " key "
                                             << key;
          ASSERT_EQ(static_cast<int>(src.slot), want.slot)
              << "lane " << lane << " query " << query << " key " << key;
          ++seen[src.lane][src.slot];
        }
      }
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    for (int slot = 0; slot < 8; ++slot) EXPECT_EQ(seen[lane][slot], 1) << lane << "," << slot;
  }
}

TEST(DropoutMapping, KeepIsUint16BelowThreshold) {
  for (float p : {0.0f, 0.1f, 0.25f, 0.5f, 0.9f, 0.99999f, 0.999999f}) {
    EXPECT_EQ(flashattn::dropout_keep_threshold(p), doc_threshold(p)) << p;
    for (int64_t j = 0; j < 300; ++j) {
      const bool keep = flashattn::dropout_keep(9, 4, p, 1, 0, 2, 17, j);
      EXPECT_EQ(keep, doc_uint16(9, 4, 1, 0, 2, 17, j) < doc_threshold(p)) << p << " " << j;
    }
  }
  EXPECT_EQ(flashattn::dropout_keep_threshold(0.0f), 65536u);   // p = 0 keeps everything
  EXPECT_EQ(flashattn::dropout_keep_threshold(0.5f), 32768u);
  EXPECT_EQ(flashattn::dropout_keep_threshold(0.1f), 58982u);   // round(0.9 · 65536) with 0.1f
  EXPECT_EQ(flashattn::dropout_keep_threshold(0.999999f), 0u);  // (1 − p)·65536 < 0.5: drop all
}

// The (batch, head) stream is offset + b·heads_q + h: shifting the offset is shifting b or h.
TEST(DropoutMapping, OffsetNamesTheStream) {
  for (int64_t b = 0; b < 3; ++b) {
    for (int64_t h = 0; h < 4; ++h) {
      for (int64_t i = 0; i < 40; i += 3) {
        for (int64_t j = 0; j < 40; j += 5) {
          EXPECT_EQ(flashattn::dropout_uint16(1, 10, b, h, 4, i, j),
                    flashattn::dropout_uint16(1, 10 + static_cast<uint64_t>(b * 4 + h), 0, 0, 4, i, j));
        }
      }
    }
  }
  EXPECT_EQ(flashattn::dropout_offset_increment(3, 8), 24u);
  EXPECT_EQ(flashattn::dropout_offset_increment(1, 1), 1u);
}

// ---- (a) Keep fraction and uniformity -----------------------------------------------------------

class KeepFraction : public ::testing::TestWithParam<float> {};
TEST_P(KeepFraction, WithinFiveSigmaOfOneMinusP) {
  const float p = GetParam();
  int64_t kept = 0, n = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t i = 0; i < 128; ++i)
        for (int64_t j = 0; j < 300; ++j, ++n) {
          kept += flashattn::dropout_keep(0xdeadbeefcafef00dull, 123, p, b, h, 4, i, j);
        }
  const double q = 1.0 - p;
  const double sigma = std::sqrt(q * (1 - q) / static_cast<double>(n));
  const double frac = static_cast<double>(kept) / static_cast<double>(n);
  EXPECT_LE(std::fabs(frac - q), 5 * sigma) << "kept " << frac << " of " << n << ", expected " << q;
}
INSTANTIATE_TEST_SUITE_P(P, KeepFraction, ::testing::Values(0.1f, 0.5f, 0.9f),
                         [](const auto& info) {
                           return "p0" + std::to_string(static_cast<int>(info.param * 10 + 0.5f));
                         });

// The 16-bit numbers are uniform: chi-square of their high and low bytes over 256 bins
// (255 degrees of freedom: mean 255, sd 22.6; the bound is mean + 7 sd).
TEST(DropoutUniformity, ChiSquareOfBytes) {
  std::vector<int64_t> hi(256, 0), lo(256, 0);
  int64_t n = 0;
  for (int64_t h = 0; h < 3; ++h)
    for (int64_t i = 0; i < 256; ++i)
      for (int64_t j = 0; j < 256; ++j, ++n) {
        const uint16_t u = flashattn::dropout_uint16(42, 0, 0, h, 3, i, j);
        ++hi[u >> 8];
        ++lo[u & 0xff];
      }
  const double expected = static_cast<double>(n) / 256.0;
  double chi_hi = 0, chi_lo = 0;
  for (int k = 0; k < 256; ++k) {
    chi_hi += (hi[k] - expected) * (hi[k] - expected) / expected;
    chi_lo += (lo[k] - expected) * (lo[k] - expected) / expected;
  }
  EXPECT_LT(chi_hi, 255 + 7 * 22.6);
  EXPECT_LT(chi_lo, 255 + 7 * 22.6);
}

// ---- (d) Seeds and offsets ----------------------------------------------------------------------

int64_t mask_differences(uint64_t s1, uint64_t o1, uint64_t s2, uint64_t o2) {
  int64_t diff = 0;
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 64; ++i)
      for (int64_t j = 0; j < 64; ++j) {
        diff += flashattn::dropout_keep(s1, o1, 0.5f, 1, h, 2, i, j) !=
                flashattn::dropout_keep(s2, o2, 0.5f, 1, h, 2, i, j);
      }
  return diff;  // of 8192; independent masks differ in about half
}

TEST(DropoutSeeds, SameSeedAndOffsetSameMask) { EXPECT_EQ(mask_differences(5, 9, 5, 9), 0); }

TEST(DropoutSeeds, DifferentSeedsOrOffsetsDifferentMasks) {
  EXPECT_GT(mask_differences(5, 9, 6, 9), 3500);
  EXPECT_GT(mask_differences(5, 9, 5, 10), 3500);
  EXPECT_GT(mask_differences(5, 9, 5 + (uint64_t{1} << 32), 9), 3500);  // the high key word
  EXPECT_GT(mask_differences(5, 9, 5, 9 + (uint64_t{1} << 32)), 3500);  // the high counter word
  // Advancing the offset by dropout_offset_increment(batch, heads_q) gives fresh numbers.
  EXPECT_GT(mask_differences(5, 9, 5, 9 + flashattn::dropout_offset_increment(2, 2)), 3500);
}

// The library's forward: same seed/offset twice → same bits; another seed → another output.
TEST(DropoutSeeds, ForwardReproducibleAndSeedSensitive) {
  Case c;
  c.batch = 2;
  c.seqlen_q = 40;
  c.seqlen_k = 50;
  c.heads_q = 2;
  c.heads_kv = 1;
  c.head_dim = 16;
  c.dropout_p = 0.5f;
  Problem p1(c), p2(c);
  const ForwardRun a = run_forward(p1), b = run_forward(p2);
  EXPECT_TRUE(a.out.bit_equal(b.out));
  c.dropout_seed += 1;
  Problem p3(c);
  const ForwardRun d = run_forward(p3);
  EXPECT_FALSE(a.out.bit_equal(d.out));
  EXPECT_TRUE(a.lse.bit_equal(d.lse));  // LSE is taken before dropout
  c.dropout_seed -= 1;
  c.dropout_offset += flashattn::dropout_offset_increment(c.batch, c.heads_q);
  Problem p4(c);
  EXPECT_FALSE(a.out.bit_equal(run_forward(p4).out));
}

// p = 0 with any seed is no dropout at all, bit for bit.
TEST(DropoutSeeds, ZeroProbabilityIsNoDropout) {
  Case c;
  c.batch = 1;
  c.seqlen_q = 33;
  c.seqlen_k = 44;
  c.heads_q = 2;
  c.heads_kv = 2;
  c.head_dim = 16;
  Problem p1(c);
  const ForwardRun a = run_forward(p1);
  c.dropout_seed = 999;
  c.dropout_offset = 12345;
  Problem p2(c);
  p2.opts.dropout_p = 0.0f;
  EXPECT_TRUE(a.out.bit_equal(run_forward(p2).out));
}

// ---- (b), (c) Forward and backward against the reference given the same mask --------------------

// The grid: dropout_grid (tests/shared_cases.h), also run by the GPU tests.
std::vector<Case> dropout_cases() { return for_dtypes(dropout_grid()); }

class DropoutForward : public ::testing::TestWithParam<Case> {};
TEST_P(DropoutForward, MatchesReferenceWithSameMask) { check_forward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Dropout, DropoutForward, ::testing::ValuesIn(dropout_cases()), CaseName());

class DropoutBackward : public ::testing::TestWithParam<Case> {};
TEST_P(DropoutBackward, MatchesReferenceWithSameMask) { check_backward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Dropout, DropoutBackward, ::testing::ValuesIn(dropout_cases()), CaseName());

}  // namespace
}  // namespace fa_test
