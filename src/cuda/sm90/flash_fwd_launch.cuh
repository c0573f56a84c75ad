// Launch of the sm90 forward kernel: tensor maps, grid, shared-memory opt-in, stream. Included
// by cuda/fwd_launch.cuh, which picks the kernel for the device.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdlib>

#include "cuda/common/check.h"
#include "cuda/dispatch.h"
#include "cuda/sm90/flash_fwd_kernel.cuh"
#include "cuda/sm90/tensor_map.h"

namespace flashattn::detail::cuda {

// A persistent grid (one thread block an SM, each looping over tiles, its next tile's loads
// under this one's epilogue) where every tile does the same work: no mask that shortens some
// tiles' key range (causal, local) and one length for every sequence, so that a fixed share of
// tiles each is a fair share. It pays where a tile has few key blocks, whose prologue and
// epilogue it hides; elsewhere, and where the work is uneven (the hardware then hands the
// longest tiles out first, which a fixed share would not), one thread block a tile.
inline bool fwd_sm90_persistent(const AttentionParams& p, int key_block) {
  const bool uniform = !p.is_varlen && p.seqused_k == nullptr && p.leftpad_k == nullptr &&
                       p.window_left < 0 && p.window_right < 0;
  constexpr int64_t kMaxKeys = 2048;  // bench/tune_fwd_sm90.cu, docs/tuning.md
  return uniform && (p.seqlen_k + key_block - 1) / key_block * key_block <= kMaxKeys;
}

// FLASHATTN_TEST_FWD_GRID=n in the environment (tests only; read once): every call runs on at most
// n thread blocks, each looping over its share of the tiles, so that the tests put every layout
// and option through the loop (the tile geometry, the K/V ring and the Q buffer carried from tile
// to tile). 0 or unset: the grid above.
inline int64_t test_fwd_grid() {
  static const int64_t n = [] {
    const char* env = std::getenv("FLASHATTN_TEST_FWD_GRID");
    return env == nullptr ? int64_t{0} : std::max<int64_t>(0, std::atoll(env));
  }();
  return n;
}

// False, launching nothing, when q, k or v has no tensor map (a broadcast stride, no rows) or the
// tiles outnumber a grid: the caller takes the sm80 kernel.
template <class T, int kHeadDim, bool kScoreMods>
bool run_fwd_sm90(const AttentionParams& p, cudaStream_t stream) {
  using Tile = sm90::FwdTileFor<kHeadDim, kScoreMods>;
  const int64_t tiles = (p.seqlen_q + Tile::kBlockM - 1) / Tile::kBlockM * p.heads_q * p.batch;
  if (tiles > INT_MAX) return false;
  sm90::FwdTensorMaps maps;
  if (!sm90::encode_fwd_tensor_maps(p, Tile::kBlockM, Tile::kBlockN, &maps)) return false;
  const auto kernel = sm90::flash_fwd_kernel<T, Tile, kScoreMods>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), Tile::kSmemBytes, p.device.index,
                     "the sm90 forward kernel", kHeadDim);
  int64_t grid =
      fwd_sm90_persistent(p, Tile::kBlockN)
          ? std::min<int64_t>(tiles, int64_t{multiprocessors(p.device.index)} * Tile::kMinBlocks)
          : tiles;
  if (test_fwd_grid() > 0) grid = std::min(grid, test_fwd_grid());
  kernel<<<static_cast<unsigned>(grid), Tile::kThreads, Tile::kSmemBytes, stream>>>(p, maps);
  FLASHATTN_CUDA_CHECK(cudaGetLastError());
  return true;
}

}  // namespace flashattn::detail::cuda
