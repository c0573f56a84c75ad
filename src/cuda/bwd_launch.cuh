// The backward of one (dtype, head dim, score mods): D, then dK/dV with the dQ sums, then dQ.
// Step 2 runs the Hopper kernel (sm90/flash_bwd_kernel.cuh) where the device is an sm_90 GPU
// and the head dim has a Hopper tile, either variant (it sums dQ with atomics, at d = 256 too,
// and in the deterministic mode they take turns in a fixed order); everything else runs the sm80
// kernels (sm80/flash_bwd_kernel.cuh).
// Included only by the generated instantiation files (src/cuda/instantiations/).
#pragma once

#include "cuda/common/check.h"
#include "cuda/dispatch.h"
#include "cuda/sm80/flash_bwd_kernel.cuh"
#include "cuda/sm90/flash_bwd_kernel.cuh"

namespace flashattn::detail::cuda {

// Key blocks of block_n rows: p.seqlen_k bounds every sequence's k rows (varlen: the longest
// packed one), and the rows past seqused_k get their zero gradients from the dK/dV kernel too.
inline int64_t key_blocks(const AttentionParams& p, int block_n) {
  return (p.seqlen_k + block_n - 1) / block_n;
}

// The Hopper deterministic mode's launch order (common/block_schedule.h).
inline DetGridShape det_grid(const AttentionParams& p, int block_n) {
  const int64_t pairs = p.heads_kv * p.batch, n_blocks = key_blocks(p, block_n);
  return det_grid_shape(pairs, n_blocks,
                        det_pair_group(pairs, n_blocks, multiprocessors(p.device.index)));
}

// The dK/dV grid: (key blocks, kv heads, batch), or det_grid in the Hopper deterministic mode.
inline dim3 dkdv_grid(const AttentionParams& p, int block_n, bool det_order) {
  if (det_order) {
    const DetGridShape g = det_grid(p, block_n);
    return dim3(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y), static_cast<unsigned>(g.z));
  }
  return dim3(static_cast<unsigned>(key_blocks(p, block_n)), static_cast<unsigned>(p.heads_kv),
              static_cast<unsigned>(p.batch));
}

// The scratch of one call, in one buffer: the fp32 dQ accumulator (rows × head_dim floats, where
// dQ is summed with atomics), D for every row, and in the Hopper deterministic mode the turn
// counters (zeroed by the preprocess kernel).
struct BwdPlan {
  bool hopper = false;     // the Hopper dK/dV kernel runs
  bool atomic_dq = false;  // dQ is summed into the fp32 accumulator
  int64_t rows = 0;        // batch · heads_q · seqlen_q
  int64_t turns = 0;       // deterministic Hopper: batch · heads_q · turn_blocks(seqlen_q)

  size_t bytes(const AttentionParams& p) const {
    return static_cast<size_t>(rows * (atomic_dq ? 1 + p.head_dim : 1) + turns) * sizeof(float);
  }
};

// The deterministic mode's dQ kernel (and d 256's): its tile, shared memory and function.
template <class T, int kHeadDim, bool kScoreMods>
struct BwdDq {
  using Tile = DqTile<kHeadDim>;
  static constexpr size_t kSmemBytes = Tile::kSmemElems * sizeof(T);
  static constexpr auto kKernel = flash_bwd_dq_kernel<T, Tile, kScoreMods>;
  static const void* kernel() { return reinterpret_cast<const void*>(kKernel); }
};

template <class T, int kHeadDim, bool kScoreMods>
BwdPlan plan_bwd(const AttentionParams& p) {
  BwdPlan plan;
  // The Hopper dK/dV kernel (atomic dQ) where the device and head dim have one.
  if constexpr (sm90::kHasBwdTile<kHeadDim>) {
    // (The deterministic mode's grid holds the key blocks in y and the pair groups in z, at most
    // 65535 each: past that, over 4M keys at d = 256, 8M below, or over 524,280 (kv head, batch)
    // pairs, the sm80 kernels take it.)
    plan.hopper = use_sm90(p.device.index) &&
                  (!p.deterministic || det_grid_fits(det_grid(p, sm90::BwdTile<kHeadDim>::kBlockN)));
  }
  // Atomics where kBwdAtomicDq says so, or where the dQ kernel does not fit the device (the
  // deterministic mode then meets the dQ kernel's error).
  using Dq = BwdDq<T, kHeadDim, kScoreMods>;
  plan.atomic_dq = plan.hopper ||
                   (!p.deterministic &&
                    (kBwdAtomicDq<kHeadDim> ||
                     !dynamic_smem_fits(Dq::kernel(), Dq::kSmemBytes, p.device.index)));
  plan.rows = p.batch * p.heads_q * p.seqlen_q;
  plan.turns =
      plan.hopper && p.deterministic ? p.batch * p.heads_q * turn_blocks(p.seqlen_q) : 0;
  return plan;
}

template <class T, int kHeadDim, bool kScoreMods>
size_t bwd_workspace_bytes(const AttentionParams& p) {
  return plan_bwd<T, kHeadDim, kScoreMods>(p).bytes(p);
}

template <class T, int kHeadDim, bool kScoreMods>
void run_bwd(const AttentionParams& p, void* workspace, cudaStream_t stream) {
  const BwdPlan plan = plan_bwd<T, kHeadDim, kScoreMods>(p);
  const bool hopper = plan.hopper;
  float* scratch = static_cast<float*>(workspace);
  BwdWorkspace ws;
  ws.rows = p.seqlen_q;
  ws.dq_accum = plan.atomic_dq ? scratch : nullptr;
  ws.dsum = scratch + (plan.atomic_dq ? plan.rows * p.head_dim : 0);
  if (plan.turns > 0) ws.dq_turn = reinterpret_cast<int*>(ws.dsum + plan.rows);

  const unsigned heads_q = static_cast<unsigned>(p.heads_q), batch = static_cast<unsigned>(p.batch);
  const unsigned row_blocks =
      static_cast<unsigned>((p.seqlen_q + kPreprocessWarps * kPreprocessRowsPerWarp - 1) /
                            (kPreprocessWarps * kPreprocessRowsPerWarp));
  using Dq = BwdDq<T, kHeadDim, kScoreMods>;
  // Every kernel's shared memory is allowed (or refused, with an error naming it) before the
  // first launch, so that a refused call has written nothing. (Only the deterministic mode meets
  // a dQ kernel that does not fit: elsewhere plan_bwd took the atomics.)
  if (ws.dq_accum == nullptr && row_blocks > 0) {
    allow_dynamic_smem(Dq::kernel(), Dq::kSmemBytes, p.device.index,
                       "the deterministic backward's dQ kernel (deterministic=false does without "
                       "it)",
                       kHeadDim);
  }
  // Step 1 runs once the dK/dV kernel is allowed (grids with a zero dimension are skipped:
  // seqlen_q = 0 still needs dK = dV = 0, seqlen_k = 0 still needs dQ = 0).
  auto preprocess = [&] {
    if (row_blocks == 0) return;
    flash_bwd_preprocess_kernel<T>
        <<<dim3(row_blocks, heads_q, batch), 32 * kPreprocessWarps, 0, stream>>>(p, ws);
    FLASHATTN_CUDA_CHECK(cudaGetLastError());
  };
  auto launch_dkdv = [&](auto kernel, dim3 grid, int threads, size_t smem_bytes,
                         const char* what) {
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem_bytes, p.device.index, what,
                       kHeadDim);
    preprocess();
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
    kernel<<<grid, threads, smem_bytes, stream>>>(p, ws);
    FLASHATTN_CUDA_CHECK(cudaGetLastError());
  };
  // The first tile of the head dim's chain (sm80/bwd_tile.h) that the device's shared memory holds.
  auto launch_dkdv_sm80 = [&] {
    auto kernel_of = [](auto tile) { return flash_bwd_dkdv_kernel<T, decltype(tile), kScoreMods>; };
    launch_first_fitting(
        typename BwdTiles<kHeadDim>::type{},
        [&](auto tile) {
          return dynamic_smem_fits(reinterpret_cast<const void*>(kernel_of(tile)),
                                   decltype(tile)::template smem_bytes<T>(), p.device.index);
        },
        [&](auto tile) {
          using Tile = decltype(tile);
          launch_dkdv(kernel_of(tile), dkdv_grid(p, Tile::kBlockN, false), Tile::kThreads,
                      Tile::template smem_bytes<T>(), "the sm80 backward (dK/dV) kernel");
        });
  };
  if constexpr (sm90::kHasBwdTile<kHeadDim>) {
    using Tile = sm90::BwdTile<kHeadDim>;
    if (hopper) {
      const bool det = p.deterministic;
      launch_dkdv(det ? sm90::flash_bwd_dkdv_kernel<T, Tile, true, kScoreMods>
                      : sm90::flash_bwd_dkdv_kernel<T, Tile, false, kScoreMods>,
                  dkdv_grid(p, Tile::kBlockN, det), Tile::kThreadsAll, Tile::kSmemBytesAll,
                  "the sm90 backward (dK/dV) kernel");
    } else {
      launch_dkdv_sm80();
    }
  } else {
    launch_dkdv_sm80();
  }

  if (row_blocks == 0) return;
  if (ws.dq_accum != nullptr) {
    flash_bwd_convert_dq_kernel<T>
        <<<dim3(row_blocks, heads_q, batch), 32 * kPreprocessWarps, 0, stream>>>(p, ws);
    FLASHATTN_CUDA_CHECK(cudaGetLastError());
  } else {
    const dim3 grid(
        static_cast<unsigned>((p.seqlen_q + Dq::Tile::kBlockM - 1) / Dq::Tile::kBlockM), heads_q,
        batch);
    Dq::kKernel<<<grid, Dq::Tile::kThreads, Dq::kSmemBytes, stream>>>(p, ws);
    FLASHATTN_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace flashattn::detail::cuda
