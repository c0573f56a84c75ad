// Launch of the sm90 forward kernel: grid, shared-memory opt-in, stream. Included by
// cuda/fwd_launch.cuh, which picks the kernel for the device.
#pragma once

#include "cuda/common/fwd_grid.cuh"
#include "cuda/dispatch.h"
#include "cuda/sm90/flash_fwd_kernel.cuh"

namespace flashattn::detail::cuda {

template <class T, int kHeadDim, bool kScoreMods>
void run_fwd_sm90(const AttentionParams& p, cudaStream_t stream) {
  using Tile = sm90::FwdTileFor<kHeadDim, kScoreMods>;
  launch_forward_grid<Tile>(sm90::flash_fwd_kernel<T, Tile, kScoreMods>, Tile::kSmemBytes, p,
                            stream, "the sm90 forward kernel", kHeadDim);
}

}  // namespace flashattn::detail::cuda
