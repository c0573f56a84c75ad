// Launch of the sm90 forward kernel: tensor maps, grid, shared-memory opt-in, stream. Included
// by cuda/fwd_launch.cuh, which picks the kernel for the device.
#pragma once

#include <climits>

#include "cuda/common/check.h"
#include "cuda/dispatch.h"
#include "cuda/sm90/flash_fwd_kernel.cuh"
#include "cuda/sm90/tensor_map.h"

namespace flashattn::detail::cuda {

// One thread block a tile (query block, head, batch). False, launching nothing, when q, k or v
// has no tensor map (a broadcast stride, no rows) or the tiles outnumber a grid: the caller takes
// the sm80 kernel.
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
  kernel<<<static_cast<unsigned>(tiles), Tile::kThreads, Tile::kSmemBytes, stream>>>(p, maps);
  FLASHATTN_CUDA_CHECK(cudaGetLastError());
  return true;
}

}  // namespace flashattn::detail::cuda
