// Philox4x32-10 and the dropout mapping shared by the CPU implementation and the CUDA kernels.
// The mapping is specified in docs/dropout.md; change both together or not at all.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace flashattn::detail {

struct Philox4 {
  uint32_t x[4];
};

FLASHATTN_HOST_DEVICE void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

// Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3" (SC'11), 10 rounds.
FLASHATTN_HOST_DEVICE Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                            uint32_t k0, uint32_t k1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kMul0, c0, hi0, lo0);
    mulhilo32(kMul1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// One Philox call serves a 16×16 block of the score matrix of one (batch, query head) and one
// "lane" of it: the 8 elements that an mma.sync m16n8k16 accumulator gives one thread over two
// n8 tiles: rows {r, r+8}, columns {c, c+1, c+8, c+9} with r = lane/4, c = 2·(lane%4).
struct DropoutCoord {
  uint32_t counter0;  // column block · 32 + lane
  uint32_t counter1;  // row block
  int slot;           // which of the 8 uint16 of the call (0..7)
};

FLASHATTN_HOST_DEVICE DropoutCoord dropout_coord(int64_t row, int64_t col) {
  const int r = static_cast<int>(row & 15), c = static_cast<int>(col & 15);
  const int lane = (r & 7) * 4 + ((c & 7) >> 1);
  DropoutCoord d;
  d.counter0 = static_cast<uint32_t>((col >> 4) * 32 + lane);
  d.counter1 = static_cast<uint32_t>(row >> 4);
  d.slot = (c >> 3) * 4 + (r >> 3) * 2 + (c & 1);
  return d;
}

// The 64-bit counter half that names one (batch, query head) of one call.
FLASHATTN_HOST_DEVICE uint64_t dropout_stream(uint64_t offset, int64_t batch_idx, int64_t head_idx,
                                              int64_t heads_q) {
  return offset + static_cast<uint64_t>(batch_idx * heads_q + head_idx);
}

FLASHATTN_HOST_DEVICE Philox4 dropout_philox(uint64_t seed, uint64_t stream, uint32_t counter0,
                                             uint32_t counter1) {
  return philox4x32_10(counter0, counter1, static_cast<uint32_t>(stream),
                       static_cast<uint32_t>(stream >> 32), static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

FLASHATTN_HOST_DEVICE uint16_t philox_slot(const Philox4& r, int slot) {
  return static_cast<uint16_t>(r.x[slot >> 1] >> (16 * (slot & 1)));
}

// One lane's 8 keep decisions in the 16×16 block (row_block, col_block) of one (batch, query
// head)'s score matrix: bit `slot` is set where element `slot` is kept (its uint16 below
// `threshold`). The element of a slot, as dropout_coord says: row lane / 4 + 8 · ((slot >> 1)
// & 1) and column 2 · (lane % 4) + 8 · (slot >> 2) + (slot & 1) of the block, which in an
// m16n8k16 accumulator is the lane's register slot % 4 of the block's n8 tile slot / 4. The CPU
// implementation and the CUDA kernels take their dropout decisions from here.
FLASHATTN_HOST_DEVICE uint32_t dropout_keep_bits(uint64_t seed, uint64_t stream, uint32_t row_block,
                                                 uint32_t col_block, uint32_t lane,
                                                 uint32_t threshold) {
  const Philox4 r = dropout_philox(seed, stream, col_block * 32u + lane, row_block);
  uint32_t bits = 0;
  for (int slot = 0; slot < 8; ++slot) {
    bits |= static_cast<uint32_t>(philox_slot(r, slot) < threshold) << slot;
  }
  return bits;
}

// Where a transposed accumulator's element finds its decision: in an m64nN wgmma accumulator
// of Sᵀ (keys as the rows, queries as the columns: the sm90 backward) the thread of lane
// 4·g + t holds, in each 16 × 16 block, keys g + 8·key_half and queries 8·query_half + 2t +
// query_odd. Such an element is bit `slot` of dropout_keep_bits for the forward's lane `lane` of
// the same block (rows = queries, columns = keys, as above).
struct DropoutSource {
  uint32_t lane;
  uint32_t slot;
};

FLASHATTN_HOST_DEVICE DropoutSource transposed_dropout_source(int g, int t, int key_half,
                                                              int query_half, int query_odd) {
  return {static_cast<uint32_t>((2 * t + query_odd) * 4 + g / 2),
          static_cast<uint32_t>(4 * key_half + 2 * query_half + (g & 1))};
}

}  // namespace flashattn::detail
