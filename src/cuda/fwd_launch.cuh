// The forward of one (dtype, head dim, score mods): the Hopper kernel (wgmma) where the device is
// an sm_90 GPU and the head dim has a Hopper tile, else the sm80 kernel (mma.sync), which runs on
// every GPU from sm_80 on. Included only by the generated instantiation files.
#pragma once

#include "cuda/dispatch.h"
#include "cuda/sm80/flash_fwd_launch.cuh"
#include "cuda/sm90/flash_fwd_launch.cuh"

namespace flashattn::detail::cuda {

template <class T, int kHeadDim, bool kScoreMods>
void run_fwd(const AttentionParams& p, cudaStream_t stream) {
  if constexpr (sm90::kHasFwdTile<kHeadDim>) {
    if (use_sm90(p.device.index)) return run_fwd_sm90<T, kHeadDim, kScoreMods>(p, stream);
  }
  run_fwd_sm80<T, kHeadDim, kScoreMods>(p, stream);
}

}  // namespace flashattn::detail::cuda
