// Tile shapes of the sm80 backward kernels, one constexpr choice per compiled head dim.
#pragma once

#include "cuda/common/tile_chain.h"

namespace flashattn::detail::cuda {

// The dK/dV kernel: one thread block owns kBlockN keys of one kv head and walks kBlockM query rows
// at a time. Its three products are split over the warps in three ways:
//   S = Q Kᵀ and dP = dO Vᵀ   (kBlockM × kBlockN):  kSdpWarpsM along queries × the rest along keys
//   dV += Pᵀ dO, dK += dSᵀ Q  (kBlockN × kHeadDim): kDkvWarpsN along keys × the rest along dims
//   dQ = dS K                 (kBlockM × kHeadDim): kDqWarpsM along queries × the rest along dims
// P and dS cross between the splits through shared memory.
template <int kHeadDim_, int kBlockM_, int kBlockN_, int kWarps_, int kSdpWarpsM_,
          int kDkvWarpsN_, int kDqWarpsM_, int kDqChunks_ = 1>
struct BwdTile {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = 32 * kWarps;
  // Rows padded by 16 bytes: ldmatrix of 8 consecutive rows hits 8 distinct bank groups.
  static constexpr int kPitch = kHeadDim + 8;   // Q, dO, K, V
  static constexpr int kPitchP = kBlockN + 8;  // P, dS

  static constexpr int kSdpWarpsM = kSdpWarpsM_;
  static constexpr int kSdpWarpsN = kWarps / kSdpWarpsM;
  static constexpr int kSdpRows = kBlockM / kSdpWarpsM;
  static constexpr int kSdpCols = kBlockN / kSdpWarpsN;
  static constexpr int kSdpMTiles = kSdpRows / 16;
  static constexpr int kSdpNTiles = kSdpCols / 8;

  static constexpr int kDkvWarpsN = kDkvWarpsN_;
  static constexpr int kDkvWarpsD = kWarps / kDkvWarpsN;
  static constexpr int kDkvRows = kBlockN / kDkvWarpsN;
  static constexpr int kDkvCols = kHeadDim / kDkvWarpsD;
  static constexpr int kDkvMTiles = kDkvRows / 16;
  static constexpr int kDkvNTiles = kDkvCols / 8;

  static constexpr int kDqWarpsM = kDqWarpsM_;
  static constexpr int kDqWarpsD = kWarps / kDqWarpsM;
  static constexpr int kDqRows = kBlockM / kDqWarpsM;
  static constexpr int kDqCols = kHeadDim / kDqWarpsD;
  static constexpr int kDqMTiles = kDqRows / 16;
  // dQ is computed (and added to the accumulator) in kDqChunks column slices, each of
  // kDqChunkNTiles n8 tiles: fewer live registers, at the price of reading dS again per slice.
  static constexpr int kDqChunks = kDqChunks_;
  static constexpr int kDqChunkNTiles = kDqCols / 8 / kDqChunks;

  // sK, sV; sQ and sdO twice (the next query block is fetched while this one is used); sP, sdS;
  // then, in floats, the rows' LSE and D twice.
  static constexpr int kSmemElems = 2 * kBlockN * kPitch + 4 * kBlockM * kPitch + 2 * kBlockM * kPitchP;
  template <class T>
  static constexpr int smem_bytes() {
    return kSmemElems * static_cast<int>(sizeof(T)) + 4 * kBlockM * static_cast<int>(sizeof(float));
  }

  static_assert(kWarps % kSdpWarpsM == 0 && kWarps % kDkvWarpsN == 0 && kWarps % kDqWarpsM == 0);
  static_assert(kSdpRows % 16 == 0 && kSdpCols % 16 == 0, "dropout draws whole 16×16 blocks");
  static_assert(kDkvRows % 16 == 0 && kDkvCols % 16 == 0, "m16 tiles, pairs of n8 tiles");
  static_assert(kDqRows % 16 == 0 && kDqCols % (16 * kDqChunks) == 0, "m16 tiles, pairs of n8 tiles");
  static_assert(kBlockM % 16 == 0 && kBlockN % 16 == 0 && kHeadDim % 32 == 0);
};

// Registers bound the shapes: dK and dV live in registers for the whole thread block,
// 2·kBlockN·kHeadDim/kThreads floats a thread (128 at d = 128 with 128 keys, and at d = 256 with
// 64 keys). Shapes and warp splits follow FlashAttention-2's sm80 choices (8 warps; 128 keys up
// to d = 128, 64 beyond; dK/dV warps 32 keys × 64 dims at d ≥ 128, so that each fragment read
// from shared memory feeds two or more mma).
template <int kHeadDim>
struct BwdTileFor;
template <>
struct BwdTileFor<32> : BwdTile<32, 64, 128, 8, 2, 4, 4> {};
template <>
struct BwdTileFor<64> : BwdTile<64, 64, 128, 8, 2, 4, 4> {};
template <>
struct BwdTileFor<96> : BwdTile<96, 64, 128, 8, 2, 4, 4> {};
template <>
struct BwdTileFor<128> : BwdTile<128, 64, 128, 8, 2, 4, 2, 2> {};
template <>
struct BwdTileFor<160> : BwdTile<160, 64, 64, 8, 4, 4, 4> {};
template <>
struct BwdTileFor<192> : BwdTile<192, 64, 64, 8, 4, 2, 2> {};
template <>
struct BwdTileFor<224> : BwdTile<224, 64, 64, 8, 4, 4, 4> {};
template <>
struct BwdTileFor<256> : BwdTile<256, 64, 64, 8, 4, 2, 2, 2> {};

// The dK/dV tiles a head dim may run with, largest first: the launcher takes the first whose shared
// memory the device gives a block (cuda/bwd_launch.cuh). BwdTileFor is sized for Hopper's 227 KB;
// the smaller ones serve an A100 (166,912 bytes a block) and sm_86/89/120 parts (101,376).
// Halving kBlockN, then kBlockM, shrinks what dK, dV and the K/V tile take; past d = 128 the
// smallest have 4 warps, whose splits still divide the tile. Bytes, bf16/fp16:
//   d  64: 109,568  74,752             d 160: 148,480  70,144
//   d  96: 142,336  99,328             d 192: 173,056 112,128  82,432
//   d 128: 175,104 123,904  79,360     d 224: 197,632  94,720
//                                      d 256: 222,208 107,008 (an A100; not sm_86/89/120)
// Where none fits, the error names the smallest.
template <int kHeadDim>
struct BwdTiles {
  using type = TileChain<BwdTileFor<kHeadDim>>;
};
template <>
struct BwdTiles<64> {
  using type = TileChain<BwdTileFor<64>, BwdTile<64, 64, 64, 8, 4, 4, 4>>;
};
template <>
struct BwdTiles<96> {
  using type = TileChain<BwdTileFor<96>, BwdTile<96, 64, 64, 8, 4, 4, 4>>;
};
template <>
struct BwdTiles<128> {
  using type = TileChain<BwdTileFor<128>, BwdTile<128, 64, 64, 8, 4, 4, 4>,
                         BwdTile<128, 32, 64, 8, 2, 4, 2>>;
};
template <>
struct BwdTiles<160> {
  using type = TileChain<BwdTileFor<160>, BwdTile<160, 32, 32, 4, 2, 2, 2>>;
};
template <>
struct BwdTiles<192> {
  using type = TileChain<BwdTileFor<192>, BwdTile<192, 32, 64, 8, 2, 4, 2>,
                         BwdTile<192, 32, 32, 4, 2, 2, 2, 2>>;
};
template <>
struct BwdTiles<224> {
  using type = TileChain<BwdTileFor<224>, BwdTile<224, 32, 32, 4, 2, 2, 2, 7>>;
};
template <>
struct BwdTiles<256> {
  using type = TileChain<BwdTileFor<256>, BwdTile<256, 32, 32, 4, 2, 2, 2, 4>>;
};

// dQ by fp32 atomics from the dK/dV kernel, or by the dQ kernel below (no atomics; always so in
// the deterministic mode). At d = 256 the dQ kernel is also the faster: 1.17–1.26× over the
// sweep on an H100 (at 4ae7941); at 64 and 128 the two are level. Where the dQ kernel does not
// fit the device (d 256 on an A100), the atomics sum dQ at d = 256 too (cuda/bwd_launch.cuh).
template <int kHeadDim>
inline constexpr bool kBwdAtomicDq = kHeadDim != 256;

// The dQ kernel of the deterministic mode (and of d = 256): one thread block per (query block,
// head, batch), each warp owns 16 whole rows (as in the forward), dQ stays in registers and is
// written once.
template <int kHeadDim_>
struct DqTile {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 64;
  static constexpr int kBlockN = 64;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kWarpRows = kBlockM / kWarps;
  static constexpr int kMTiles = kWarpRows / 16;
  static constexpr int kNTiles = kBlockN / 8;
  static constexpr int kDTiles = kHeadDim / 8;
  static constexpr int kPitch = kHeadDim + 8;
  // sQ, sdO; sK and sV twice (the next key block is fetched while this one is used).
  static constexpr int kSmemElems = 2 * kBlockM * kPitch + 4 * kBlockN * kPitch;
};

}  // namespace flashattn::detail::cuda
