// Launch of the sm80 forward kernels: grid, shared-memory opt-in, stream. Included by
// cuda/fwd_launch.cuh, which picks the kernel for the device and the call.
#pragma once

#include "cuda/common/check.h"
#include "cuda/common/fwd_grid.cuh"
#include "cuda/dispatch.h"
#include "cuda/sm80/flash_fwd_kernel.cuh"

namespace flashattn::detail::cuda {

// The first tile of the head dim's chain (sm80/fwd_tile.h) that the device's shared memory holds.
template <class T, int kHeadDim, bool kScoreMods>
void run_fwd_sm80(const AttentionParams& p, cudaStream_t stream) {
  auto kernel_of = [](auto tile) {
    return flash_fwd_kernel<T, decltype(tile), kScoreMods, /*kDecode=*/false>;
  };
  launch_first_fitting(
      typename FwdTiles<kHeadDim, kScoreMods>::type{},
      [&](auto tile) {
        return dynamic_smem_fits(reinterpret_cast<const void*>(kernel_of(tile)),
                                 fwd_smem_bytes<T, decltype(tile), /*kDecode=*/false>(),
                                 p.device.index);
      },
      [&](auto tile) {
        using Tile = decltype(tile);
        launch_forward_grid<Tile>(kernel_of(tile), fwd_smem_bytes<T, Tile, /*kDecode=*/false>(), p,
                                  stream, "the sm80 forward kernel", kHeadDim);
      });
}

// The decode kernel (flash_fwd_kernel's kDecode variant) with one of its tiles, and the blocks of
// it that one SM holds at once (read once per device), which the plan's split heuristic needs.
template <class T, class Tile_, bool kScoreMods>
struct FwdDecode {
  using Tile = Tile_;
  static constexpr int kHeadDim = Tile::kHeadDim;
  static constexpr size_t kSmemBytes = fwd_smem_bytes<T, Tile, /*kDecode=*/true>();
  static constexpr auto launch = flash_fwd_kernel<T, Tile, kScoreMods, /*kDecode=*/true>;
  static const void* kernel() { return reinterpret_cast<const void*>(launch); }
  static int resident_blocks(int device) {
    allow_dynamic_smem(kernel(), kSmemBytes, device, "the sm80 decode kernel", kHeadDim);
    return blocks_per_multiprocessor(kernel(), Tile::kThreads, kSmemBytes, device);
  }
};

// The decode kernel with one tile (Decode: a FwdDecode) over the plan's splits, then the combine
// unless the kernel merges them (on a zeroed workspace, whose counters start at zero).
template <class Decode>
void run_decode_tile(const AttentionParams& p, const FwdPlan& plan, void* workspace,
                     cudaStream_t stream) {
  using Tile = typename Decode::Tile;
  AttentionParams d = p;
  d.pack_gqa = plan.pack_gqa;
  d.splits = plan.num_splits;
  if (plan.num_splits > 1) {  // the workspace: the tiles' counters, then the partials
    if (plan.merge_in_kernel) d.split_counters = static_cast<int*>(workspace);
    d.out_partial = reinterpret_cast<float*>(static_cast<char*>(workspace) + kSplitCounterBytes);
    d.lse_partial = d.out_partial + plan.num_splits * p.heads_q * p.batch * p.seqlen_q * p.head_dim_v;
  }
  allow_dynamic_smem(Decode::kernel(), Decode::kSmemBytes, p.device.index,
                     "the sm80 decode kernel", Decode::kHeadDim);
  const int64_t rows = p.seqlen_q * (plan.pack_gqa ? p.group : 1);
  const dim3 grid(static_cast<unsigned>((rows + Tile::kBlockM - 1) / Tile::kBlockM * plan.num_splits),
                  static_cast<unsigned>(plan.pack_gqa ? p.heads_kv : p.heads_q),
                  static_cast<unsigned>(p.batch));
  Decode::launch<<<grid, Tile::kThreads, Decode::kSmemBytes, stream>>>(d);
  FLASHATTN_CUDA_CHECK(cudaGetLastError());
  if (plan.num_splits > 1 && !plan.merge_in_kernel) combine_splits(d, stream);
}

// f(FwdDecode<…>{}) with the plan's tile: 32 rows where the plan asks for them and the head dim
// has the tile, else 16.
template <class T, int kHeadDim, bool kScoreMods, class F>
void with_decode_tile(const FwdPlan& plan, F&& f) {
  if constexpr (kHasDecodeTile32<kHeadDim>) {
    if (plan.decode_rows32) return f(FwdDecode<T, DecodeTile32For<kHeadDim>, kScoreMods>{});
  }
  f(FwdDecode<T, DecodeTileFor<kHeadDim>, kScoreMods>{});
}

template <class T, int kHeadDim, bool kScoreMods>
void run_fwd_decode(const AttentionParams& p, const FwdPlan& plan, void* workspace,
                    cudaStream_t stream) {
  with_decode_tile<T, kHeadDim, kScoreMods>(
      plan, [&](auto decode) { run_decode_tile<decltype(decode)>(p, plan, workspace, stream); });
}

}  // namespace flashattn::detail::cuda
