// Launch of the sm80 forward kernel: grid, shared-memory opt-in, stream. Included by
// cuda/fwd_launch.cuh, which picks the kernel for the device.
#pragma once

#include "cuda/common/check.h"
#include "cuda/dispatch.h"
#include "cuda/sm80/flash_fwd_kernel.cuh"

namespace flashattn::detail::cuda {

template <class T, int kHeadDim, bool kScoreMods>
void run_fwd_sm80(const AttentionParams& p, cudaStream_t stream) {
  using Tile = FwdTileFor<kHeadDim, kScoreMods>;
  constexpr size_t kSmemBytes = Tile::kSmemElems * sizeof(T);
  auto kernel = flash_fwd_kernel<T, Tile, kScoreMods>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), kSmemBytes, p.device.index,
                     "the sm80 forward kernel", kHeadDim);
  const dim3 grid(static_cast<unsigned>((p.seqlen_q + Tile::kBlockM - 1) / Tile::kBlockM),
                  static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch));
  kernel<<<grid, Tile::kThreads, kSmemBytes, stream>>>(p);
  FLASHATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace flashattn::detail::cuda
