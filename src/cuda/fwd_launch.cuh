// The forward of one (dtype, head dim, score mods): its plan, then the kernel. A decode step
// (few query rows; a paged cache; a split asked for) takes the sm80 decode kernel on every GPU;
// otherwise the Hopper kernel (wgmma, TMA) where the device is an sm_90 GPU, the head dim has a
// Hopper tile and q, k and v have tensor maps, else the sm80 kernel (mma.sync), which runs on
// every GPU from sm_80 on. Included only by the generated instantiation files.
#pragma once

#include <algorithm>

#include "cuda/dispatch.h"
#include "cuda/sm80/flash_fwd_launch.cuh"
#include "cuda/sm90/flash_fwd_launch.cuh"

namespace flashattn::detail::cuda {

template <class T, int kHeadDim, bool kScoreMods>
FwdPlan plan_fwd(const AttentionParams& p) {
  FwdPlan plan;
  // A varlen batch is never split (the partials' rows are b · seqlen_q + i).
  plan.decode = takes_decode_kernel(p);
  if (!plan.decode) return plan;
  plan.pack_gqa = p.group > 1;
  // Tile rows of a (sequence, head): more than the 16-row tile holds take the 32-row tile, which
  // reads each K/V byte once for them (varlen: seqlen_q is the longest sequence's).
  const int64_t rows = p.seqlen_q * (plan.pack_gqa ? p.group : 1);
  plan.decode_rows32 = rows > DecodeTileFor<kHeadDim>::kBlockM;
  if (p.is_varlen || p.num_splits == 1) return plan;
  static_assert(kMaxSplits <= kMergeMaxSplits, "the in-kernel merge serves every split count");
  int64_t tiles = 0, tile_rows = 0;  // the decode grid's tiles (blocks of one split), their rows
  with_decode_tile<T, kHeadDim, kScoreMods>(plan, [&](auto decode) {
    using Decode = decltype(decode);
    constexpr int64_t kBlockM = Decode::Tile::kBlockM;
    tiles = p.batch * (plan.pack_gqa ? p.heads_kv : p.heads_q) * ((rows + kBlockM - 1) / kBlockM);
    tile_rows = std::min(rows, kBlockM);
    const int64_t key_blocks = (p.seqlen_k + Decode::Tile::kBlockN - 1) / Decode::Tile::kBlockN;
    plan.num_splits =
        p.num_splits > 1
            ? split_count(p.num_splits, key_blocks)
            : choose_num_splits(tiles, key_blocks,
                                multiprocessors(p.device.index) *
                                    Decode::resident_blocks(p.device.index));
  });
  if (plan.num_splits > 1) {
    plan.workspace_bytes = kSplitCounterBytes + static_cast<size_t>(plan.num_splits) * p.heads_q *
                                                    p.batch * p.seqlen_q * (p.head_dim_v + 1) *
                                                    sizeof(float);
    // The kernel merges a tile's splits in the block that finishes the last of them where the
    // tiles' counters fit the reserve, that block's reads stay few, and the step is short. It
    // saves the combine's launch, host time that bounds a short step, but one block then reads
    // what the combine kernel's blocks (one a row) share: on an H200 (1 query, heads 32/8,
    // bf16), a step of the decode kernel alone took 17 µs back to back at d 64, 1 × 16k keys
    // (32 MiB of K and V) against 33–38 µs with the combine kernel, but its GPU time grew by
    // 2–5 µs at 64 MiB and more (d 128 and 256 at 1 × 16k, 1 × 128k): docs/tuning.md.
    constexpr int64_t kMergeMaxFloats = int64_t{1} << 16;
    constexpr int64_t kMergeMaxKvBytes = int64_t{32} << 20;
    // (the K and V the call may read: seqlen_k is the cache's capacity, seqused_k's bound)
    const int64_t kv_bytes = p.batch * p.seqlen_k * p.heads_kv * (p.head_dim + p.head_dim_v) *
                             static_cast<int64_t>(sizeof(T));
    plan.merge_in_kernel =
        tiles * static_cast<int64_t>(sizeof(int)) <= static_cast<int64_t>(kSplitCounterBytes) &&
        tile_rows * plan.num_splits * p.head_dim_v <= kMergeMaxFloats && kv_bytes <= kMergeMaxKvBytes;
  }
  return plan;
}

template <class T, int kHeadDim, bool kScoreMods>
void run_fwd(const AttentionParams& p, const FwdPlan& plan, void* workspace, cudaStream_t stream) {
  if (plan.decode) return run_fwd_decode<T, kHeadDim, kScoreMods>(p, plan, workspace, stream);
  if constexpr (sm90::kHasFwdTile<kHeadDim>) {
    if (use_sm90(p.device.index) && run_fwd_sm90<T, kHeadDim, kScoreMods>(p, stream)) return;
  }
  run_fwd_sm80<T, kHeadDim, kScoreMods>(p, stream);
}

}  // namespace flashattn::detail::cuda
