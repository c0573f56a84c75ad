// The layout of the sm80 kernels' shared tiles of 16-bit elements: padded or swizzled rows.
#pragma once

#include "common/host_device.h"

namespace flashattn::detail::cuda {

// Where element (row, col) of a shared tile sits, col a multiple of 8 (a 16-byte chunk start).
// Padded (kSwizzle false): rows kPitch elements apart; kPitch = kCols + 8 starts 8 consecutive
// rows in 8 distinct 16-byte bank groups, so ldmatrix is conflict-free. Swizzled: rows kCols
// apart (kCols a multiple of 64, so every row starts on a 128-byte line) and chunk c of row r
// stored at chunk c ^ (r mod 8) of its 128-byte segment: ldmatrix's 8 rows still hit 8 distinct
// bank groups, and a 32-byte sector of global memory lands in one 32-byte unit of shared memory.
// With the padded pitch every other row is 16 bytes off a 32-byte unit, and cp.async then moves
// each of its sectors from L2 twice (ncu: 24 sectors an instruction where 16 are needed, a third
// of them L2 hits; the decode kernel is bound by DRAM and L2, docs/tuning.md).
// row_mod8 is row % 8, passed where the caller has it cheaper (a fragment read's rows are
// lane % 8 modulo 8).
template <int kPitch, bool kSwizzle>
FLASHATTN_HOST_DEVICE constexpr int smem_index(int row, int col, int row_mod8) {
  if constexpr (kSwizzle) {
    static_assert(kPitch % 64 == 0, "swizzled rows are whole 128-byte lines");
    return row * kPitch + (col ^ (row_mod8 << 3));
  } else {
    return row * kPitch + col;
  }
}
template <int kPitch, bool kSwizzle>
FLASHATTN_HOST_DEVICE constexpr int smem_index(int row, int col) {
  return smem_index<kPitch, kSwizzle>(row, col, row & 7);
}

}  // namespace flashattn::detail::cuda
