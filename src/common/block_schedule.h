// The backward's walk in block terms, shared by the CUDA kernels and the CPU tests
// (tests/test_block_schedule.cpp checks it against brute force): which query blocks a key block
// visits under the causal/local window, and, for the Hopper deterministic mode, which key block
// is the first of those that visit a query block (the key blocks add their dQ in turn, from
// that one up). Windows are bottom-right aligned: key j is on row i's diagonal at
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

// The lowest key block (of block_n keys) whose query_blocks_seeing holds the query block that
// starts at row m0, when any does. The key blocks that hold it are a contiguous run from this one
// (the span's bounds never decrease with n0), so a key block's rank among them is its index
// minus this.
FLASHATTN_HOST_DEVICE int64_t first_key_block_seen(int64_t seqlen_q, int64_t seqlen_k,
                                                   int64_t window_left, int64_t m0, int block_n) {
  if (window_left < 0) return 0;
  // The lowest n0 whose last key row m0 sees: n0 + block_n − 1 ≥ m0 + diag − window_left.
  const int64_t lowest_n0 = m0 + (seqlen_k - seqlen_q) - window_left - (block_n - 1);
  return lowest_n0 > 0 ? (lowest_n0 + block_n - 1) / block_n : 0;
}

}  // namespace flashattn::detail
