// Tile shapes of the sm80 forward kernel, one constexpr choice per compiled head dim.
#pragma once

#include "cuda/common/tile_chain.h"
#include "cuda/common/smem_layout.h"

namespace flashattn::detail::cuda {

// kKeyWarps: the warps that split each step's keys (the decode tiles). The warps form
// kWarps / kKeyWarps groups of kKeyWarps; each group owns kBlockM / (kWarps / kKeyWarps) rows, and
// warp w of a group takes the w-th kBlockN / kKeyWarps keys of each step. With 1 (the training
// tiles) each warp owns its rows and sees every key.
// kSwizzle: the swizzled shared layout (cuda/common/smem_layout.h), for head dims that are
// a multiple of 64; else rows padded by 16 bytes.
template <int kHeadDim_, int kBlockM_, int kBlockN_, int kWarps_, int kKeyWarps_ = 1,
          bool kSwizzle_ = false>
struct FwdTile {
  static constexpr int kHeadDim = kHeadDim_;  // compiled (padded) head dim, a multiple of 32
  static constexpr int kBlockM = kBlockM_;    // query rows of one thread block
  static constexpr int kBlockN = kBlockN_;    // keys of one main-loop step
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kKeyWarps = kKeyWarps_;
  static constexpr bool kSplitKeys = kKeyWarps > 1;  // warps merge their softmax at the end
  static constexpr int kWarpRows = kBlockM * kKeyWarps / kWarps;  // rows of one warp
  static constexpr int kWarpKeys = kBlockN / kKeyWarps;           // keys of one warp a step
  static constexpr int kMTiles = kWarpRows / 16;  // m16 tiles per warp
  static constexpr int kNTiles = kWarpKeys / 8;   // n8 tiles of S per row of tiles
  static constexpr int kDTiles = kHeadDim / 8;        // n8 tiles of O
  static constexpr bool kSwizzle = kSwizzle_;
  static constexpr int kPitch = kSwizzle ? kHeadDim : kHeadDim + 8;  // elements a shared row
  static constexpr int kSmemElems = (kBlockM + 2 * kBlockN) * kPitch;  // sQ, sK, sV

  static_assert(kWarps % kKeyWarps == 0, "whole groups of key-splitting warps");
  static_assert(kWarpRows % 16 == 0, "each warp owns whole m16 tiles");
  static_assert(kWarpKeys % 16 == 0 && kHeadDim % 32 == 0, "k16 steps and x4 ldmatrix");
  static_assert(kBlockM % 16 == 0, "dropout draws 16×16 blocks");
  static_assert(!kSwizzle || kHeadDim % 64 == 0, "swizzled rows are whole 128-byte lines");

  // The element (row, col) of sQ, sK or sV; col a multiple of 8, row_mod8 = row % 8.
  FLASHATTN_HOST_DEVICE static constexpr int at(int row, int col, int row_mod8) {
    return smem_index<kPitch, kSwizzle>(row, col, row_mod8);
  }
};

// Tiles per head dim (and score-mods variant), chosen with bench/tune_fwd.cu on an H100
// (docs/tuning.md, bf16, 16k tokens):
// - d ≤ 128: 128-row blocks, 4 warps, 32 rows a warp: each K/V fragment read from shared memory
//   feeds two m16 tiles. 128×64 at d=128 beat 128×32, 64×64 and 8-warp shapes by 10–45%
//   (361 vs 302 TFLOP/s at seqlen 4k); 128×128 at d=64 beat 128×64 by 5–13%.
// - d > 128: the O accumulator allows one m16 tile a warp; 64-row blocks of 4 warps fit two blocks
//   an SM, which hide each other's barriers: at d=256, 64×64/4 warps beat 128×64/8 warps by
//   7–18% (298 vs 268 TFLOP/s at 4k). 160–224 keep 128×64/8 warps for now: their rows are not
//   a multiple of 128 threads' 16-byte chunks, and with 4 warps the general tile loader spills
//   (132 bytes at d=192); untuned.
// - The score-mods variant of d ≤ 64 takes 64-key steps: with 128 it spills ~470 bytes.
template <int kHeadDim, bool kScoreMods>
struct FwdTileFor;
template <bool kScoreMods>
struct FwdTileFor<32, kScoreMods> : FwdTile<32, 128, kScoreMods ? 64 : 128, 4> {};
template <bool kScoreMods>
struct FwdTileFor<64, kScoreMods> : FwdTile<64, 128, kScoreMods ? 64 : 128, 4> {};
template <bool kScoreMods>
struct FwdTileFor<96, kScoreMods> : FwdTile<96, 128, 64, 4> {};
template <bool kScoreMods>
struct FwdTileFor<128, kScoreMods> : FwdTile<128, 128, 64, 4> {};
template <bool kScoreMods>
struct FwdTileFor<160, kScoreMods> : FwdTile<160, 128, 64, 8> {};
template <bool kScoreMods>
struct FwdTileFor<192, kScoreMods> : FwdTile<192, 128, 64, 8> {};
template <bool kScoreMods>
struct FwdTileFor<224, kScoreMods> : FwdTile<224, 128, 64, 8> {};
template <bool kScoreMods>
struct FwdTileFor<256, kScoreMods> : FwdTile<256, 64, 64, 4> {};

// The tiles a head dim may run with, largest first (cuda/common/tile_chain.h): at d 192 and 224
// the tile above asks 102,400 and 118,784 bytes, more than an sm_86/89/120 part's 101,376; with
// 32-key steps it asks 76,800 and 89,088 (the same warps and rows, half the K/V tile).
template <int kHeadDim, bool kScoreMods>
struct FwdTiles {
  using type = TileChain<FwdTileFor<kHeadDim, kScoreMods>>;
};
template <bool kScoreMods>
struct FwdTiles<192, kScoreMods> {
  using type = TileChain<FwdTileFor<192, kScoreMods>, FwdTile<192, 128, 32, 8>>;
};
template <bool kScoreMods>
struct FwdTiles<224, kScoreMods> {
  using type = TileChain<FwdTileFor<224, kScoreMods>, FwdTile<224, 128, 32, 8>>;
};

// The decode kernel's tiles. 16 rows (one m16 tile: a decode step has few query rows) shared by
// 4 warps that split each step's keys, so the tensor cores do 16 rows of work, not 64, and the
// registers (O: kHeadDim / 2 floats a thread) leave room for two blocks an SM. A memory-bound
// kernel wants many K/V bytes in flight per SM: 256-key steps up to d 64, 128 up to d 128, 64
// above (32 KB of K a step up to d 128; at d 64, 16 KB steps left a paged cache of 16-row pages
// 12% behind a contiguous one at 16 × 16k keys on an H200, 32 KB steps 4%; a 128-key step at
// d 256 spilled 564 bytes). For more
// than 16 tile rows (4 query tokens of a group of 8 heads, packed) up to d 128, 32 rows: two
// groups of 2 warps, each group 16 rows and each warp half a step's keys, so each K/V byte is
// read once for 32 rows (two 16-row blocks read it twice) and O stays kHeadDim / 2 floats a
// thread. (Above d 128 its S fragments double the 16-row tile's spills: 164–196 bytes at d 256.)
// d 64 and 128 take the swizzled layout, so that each K/V sector crosses from L2 once (1 × 128k
// keys at d 128: 4.11 TB/s, not 3.86, docs/tuning.md). At d 256 it ran a contiguous cache
// faster (16 × 16k: 4.32 against 4.03) but a paged one slower (3.54 against 3.95; its 4-row
// loader steps spilled 192 bytes, not 108): not taken above d 128.
template <int kHeadDim>
inline constexpr bool kDecodeSwizzle = kHeadDim == 64 || kHeadDim == 128;
template <int kHeadDim>
struct DecodeTileFor
    : FwdTile<kHeadDim, 16, kHeadDim <= 64 ? 256 : kHeadDim <= 128 ? 128 : 64, 4, /*kKeyWarps=*/4,
              kDecodeSwizzle<kHeadDim>> {};
template <int kHeadDim>
inline constexpr bool kHasDecodeTile32 = kHeadDim <= 128;
template <int kHeadDim>
struct DecodeTile32For
    : FwdTile<kHeadDim, 32, 128, 4, /*kKeyWarps=*/2, kDecodeSwizzle<kHeadDim>> {
  static_assert(kHasDecodeTile32<kHeadDim>);
};

}  // namespace flashattn::detail::cuda
