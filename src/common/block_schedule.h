// The backward's walk in block terms, shared by the CUDA kernels and the CPU tests
// (tests/test_block_schedule.cpp checks it against brute force): which query blocks a key block
// visits under the causal/local window, and, for the Hopper deterministic mode, which key block
// is the last of those that visit a query block (the key blocks add their dQ in turn, from that
// one down). Windows are bottom-right aligned: key j is on row i's diagonal at
// j = i + seqlen_k − seqlen_q; a window bound < 0 is unbounded (causal is window_right = 0).
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace flashattn::detail {

struct BlockSpan {
  int64_t begin = 0;  // [begin, end) in blocks; empty when begin == end
  int64_t end = 0;
};

// The query blocks (of block_m rows) with at least one row that sees a key of
// [n0, n0 + block_n). Every row in [i_min, i_max] below sees one, so the span is exact.
FLASHATTN_HOST_DEVICE BlockSpan query_blocks_seeing(int64_t seqlen_q, int64_t seqlen_k,
                                                    int64_t window_left, int64_t window_right,
                                                    int64_t n0, int block_m, int block_n) {
  BlockSpan span;
  if (n0 >= seqlen_k || seqlen_q <= 0) return span;
  const int64_t diag = seqlen_k - seqlen_q;
  const int64_t n_last = (n0 + block_n < seqlen_k ? n0 + block_n : seqlen_k) - 1;
  int64_t i_min = 0, i_max = seqlen_q - 1;
  if (window_right >= 0 && n0 - diag - window_right > i_min) i_min = n0 - diag - window_right;
  if (window_left >= 0 && n_last - diag + window_left < i_max) i_max = n_last - diag + window_left;
  if (i_min <= i_max) {
    span.begin = i_min / block_m;
    span.end = i_max / block_m + 1;
  }
  return span;
}

// The highest key block (of block_n keys) whose query_blocks_seeing holds the query block that
// starts at row m0 (rows [m0, m0 + block_m) ∩ [0, seqlen_q)), when any does; −1 when no key is
// that low. The key blocks that hold it are a contiguous run down from this one (the span's bounds
// never decrease with n0), so a key block's rank among them, counted from the top, is this
// minus its index.
FLASHATTN_HOST_DEVICE int64_t last_key_block_seen(int64_t seqlen_q, int64_t seqlen_k,
                                                  int64_t window_right, int64_t m0, int block_m,
                                                  int block_n) {
  // The highest key the block's last row sees.
  const int64_t i_last = (m0 + block_m < seqlen_q ? m0 + block_m : seqlen_q) - 1;
  int64_t j_max = seqlen_k - 1;
  if (window_right >= 0 && i_last + (seqlen_k - seqlen_q) + window_right < j_max) {
    j_max = i_last + (seqlen_k - seqlen_q) + window_right;
  }
  return j_max >= 0 ? j_max / block_n : -1;
}

// The Hopper deterministic backward's launch order. Its key blocks add their dQ in turns from the
// top, so a block must be launched after the blocks above it of its (kv head, batch) pair: the
// pairs go in groups (det_pair_group), and within a group come the highest key block of every
// pair, then the next ones down, and so on. The grid is (x, y, z) = (pairs of a group, key
// blocks, groups); blocks are launched in the order of x + X·(y + Y·z).
inline constexpr int64_t kDetPairGroup = 8;  // pairs a group, at most

// Pairs a group: as many as make about two waves of blocks (2 · SMs), 1 to kDetPairGroup, and
// enough that the groups fit CUDA's grid (z ≤ 65535). Measured on an H200 (132 SMs), bf16,
// deterministic backward TFLOP/s by pairs a group (1 / 2 / 4 / 8):
//   d = 256 causal 16k (256 key blocks): 210 / 199 / 180 / 163; causal 4k (64): 191 / 194 / 196 / 180
//   d = 128 causal 16k (128): 259 / 262 / 255 / 240;  non-causal 4k (32): 237 / 253 / 261 / 263
// Without a mask, more pairs a group put the blocks that wait on each other further apart in the
// launch; under a causal mask the long walks of the low key blocks come last, and a group much
// larger than a wave keeps the walks of many pairs' low blocks (and their Q, dO, dQ) in flight.
FLASHATTN_HOST_DEVICE int64_t det_pair_group(int64_t pairs, int64_t n_blocks, int64_t sms) {
  int64_t g = n_blocks > 0 ? 2 * sms / n_blocks : kDetPairGroup;
  if (g < 1) g = 1;
  if (g > kDetPairGroup) g = kDetPairGroup;
  const int64_t fit = (pairs + 65534) / 65535;  // the fewest pairs a group for z ≤ 65535
  return g > fit ? g : (fit < kDetPairGroup ? fit : kDetPairGroup);
}

struct DetGridShape {
  int64_t x = 0, y = 0, z = 0;
};

FLASHATTN_HOST_DEVICE DetGridShape det_grid_shape(int64_t pairs, int64_t n_blocks,
                                                  int64_t group) {
  DetGridShape g;
  g.x = pairs < group ? pairs : group;
  g.y = n_blocks;
  g.z = g.x > 0 ? (pairs + g.x - 1) / g.x : 0;
  return g;
}

// Whether CUDA launches that grid (y and z at most 65535; x is at most kDetPairGroup).
FLASHATTN_HOST_DEVICE bool det_grid_fits(const DetGridShape& g) {
  return g.y <= 65535 && g.z <= 65535;
}

// The (pair, key block) of block (bx, by, bz) of a grid (gx, gy, ·); a pair ≥ the number of pairs
// is a block of the last group that has nothing to do.
struct DetBlock {
  int64_t pair = 0;
  int n_block = 0;
};

FLASHATTN_HOST_DEVICE DetBlock det_block(uint32_t bx, uint32_t by, uint32_t bz, uint32_t gx,
                                         uint32_t gy) {
  DetBlock d;
  d.pair = static_cast<int64_t>(bz) * gx + bx;
  d.n_block = static_cast<int>(gy - 1 - by);  // the highest first
  return d;
}

}  // namespace flashattn::detail
