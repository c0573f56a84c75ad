// Launch of the sm90 forward kernel: tensor maps, grid, shared-memory opt-in, stream. Included
// by cuda/fwd_launch.cuh, which picks the kernel for the device.
#pragma once

#include "cuda/common/fwd_grid.cuh"
#include "cuda/dispatch.h"
#include "cuda/sm90/flash_fwd_kernel.cuh"
#include "cuda/sm90/tensor_map.h"

namespace flashattn::detail::cuda {

// False, launching nothing, when q, k or v has no tensor map (a broadcast stride): the caller
// takes the sm80 kernel.
template <class T, int kHeadDim, bool kScoreMods>
bool run_fwd_sm90(const AttentionParams& p, cudaStream_t stream) {
  using Tile = sm90::FwdTileFor<kHeadDim, kScoreMods>;
  sm90::FwdTensorMaps maps;
  if (!sm90::encode_fwd_tensor_maps(p, Tile::kBlockM, Tile::kBlockN, &maps)) return false;
  launch_forward_grid<Tile>(sm90::flash_fwd_kernel<T, Tile, kScoreMods>, Tile::kSmemBytes, p,
                            stream, "the sm90 forward kernel", kHeadDim, maps);
  return true;
}

}  // namespace flashattn::detail::cuda
