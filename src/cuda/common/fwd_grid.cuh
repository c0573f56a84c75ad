// The launch of a forward kernel over its grid, shared by the sm80 and sm90 launchers (CUDA
// translation units only: it holds a kernel launch).
#pragma once

#include <cuda_runtime.h>

#include "common/params.h"
#include "cuda/common/check.h"
#include "cuda/dispatch.h"

namespace flashattn::detail::cuda {

// Blocks of Tile::kBlockM query rows × heads_q × batch, Tile::kThreads threads; the kernel's
// shared memory allowed first (or refused, by name: allow_dynamic_smem). The kernel takes p, then
// `more`.
template <class Tile, class Kernel, class... More>
void launch_forward_grid(Kernel kernel, size_t smem_bytes, const AttentionParams& p,
                         cudaStream_t stream, const char* what, int head_dim,
                         const More&... more) {
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem_bytes, p.device.index, what,
                     head_dim);
  const dim3 grid(static_cast<unsigned>((p.seqlen_q + Tile::kBlockM - 1) / Tile::kBlockM),
                  static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch));
  kernel<<<grid, Tile::kThreads, smem_bytes, stream>>>(p, more...);
  FLASHATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace flashattn::detail::cuda
