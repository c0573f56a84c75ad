// The backward of one (dtype, head dim, score mods): D, then dK/dV with the dQ sums, then dQ.
// Step 2 runs the Hopper kernel (sm90/flash_bwd_kernel.cuh) where the device is an sm_90 GPU,
// the head dim has a Hopper tile and the variant is the plain one (it sums dQ with atomics, at
// d = 256 too, and in the deterministic mode they take turns in a fixed order); everything else
// runs the sm80 kernels (sm80/flash_bwd_kernel.cuh).
// Included only by the generated instantiation files (src/cuda/instantiations/).
#pragma once

#include "cuda/common/check.h"
#include "cuda/dispatch.h"
#include "cuda/sm80/flash_bwd_kernel.cuh"
#include "cuda/sm90/flash_bwd_kernel.cuh"

namespace flashattn::detail::cuda {

// Stream-ordered scratch: allocated and freed on the caller's stream (and so capturable).
class StreamBuffer {
 public:
  StreamBuffer(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) FLASHATTN_CUDA_CHECK(cudaMallocAsync(&data_, bytes, stream));
  }
  ~StreamBuffer() {
    if (data_ != nullptr) cudaFreeAsync(data_, stream_);
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  float* data() const { return static_cast<float*>(data_); }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_;
};

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

template <class T, int kHeadDim, bool kScoreMods>
void run_bwd(const AttentionParams& p, cudaStream_t stream) {
  // The Hopper dK/dV kernel (plain variant, atomic dQ) where the device and head dim have one.
  bool hopper = false;
  if constexpr (!kScoreMods && sm90::kHasBwdTile<kHeadDim>) {
    // (The deterministic mode's grid holds the key blocks in y and the pair groups in z, at most
    // 65535 each: past that, over 4M keys at d = 256, 8M below, or over 524,280 (kv head, batch)
    // pairs, the sm80 kernels take it.)
    hopper = use_sm90(p.device.index) &&
             (!p.deterministic || det_grid_fits(det_grid(p, sm90::BwdTile<kHeadDim>::kBlockN)));
  }
  // Scratch: D for every row, the fp32 accumulator where dQ is summed with atomics, and in the
  // Hopper deterministic mode the turn counters (zeroed).
  const bool atomic_dq = hopper || (kBwdAtomicDq<kHeadDim> && !p.deterministic);
  const int64_t rows = p.batch * p.heads_q * p.seqlen_q;
  const int64_t turns =
      hopper && p.deterministic ? p.batch * p.heads_q * sm90::turn_blocks(p.seqlen_q) : 0;
  const StreamBuffer scratch(
      static_cast<size_t>(rows * (atomic_dq ? 1 + p.head_dim : 1) + turns) * sizeof(float), stream);
  BwdWorkspace ws;
  ws.rows = p.seqlen_q;
  ws.dq_accum = atomic_dq ? scratch.data() : nullptr;
  ws.dsum = scratch.data() + (atomic_dq ? rows * p.head_dim : 0);
  if (turns > 0) {
    ws.dq_turn = reinterpret_cast<int*>(ws.dsum + rows);
    FLASHATTN_CUDA_CHECK(
        cudaMemsetAsync(ws.dq_turn, 0, static_cast<size_t>(turns) * sizeof(int), stream));
  }

  const unsigned heads_q = static_cast<unsigned>(p.heads_q), batch = static_cast<unsigned>(p.batch);
  const unsigned row_blocks =
      static_cast<unsigned>((p.seqlen_q + kPreprocessWarps * kPreprocessRowsPerWarp - 1) /
                            (kPreprocessWarps * kPreprocessRowsPerWarp));
  // (Grids with a zero dimension are skipped: seqlen_q = 0 still needs dK = dV = 0, seqlen_k = 0
  // still needs dQ = 0.)
  if (row_blocks > 0) {
    flash_bwd_preprocess_kernel<T>
        <<<dim3(row_blocks, heads_q, batch), 32 * kPreprocessWarps, 0, stream>>>(p, ws);
    FLASHATTN_CUDA_CHECK(cudaGetLastError());
  }

  auto launch_dkdv = [&](auto kernel, dim3 grid, int threads, size_t smem_bytes) {
    allow_dynamic_smem(kernel, smem_bytes);
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
    kernel<<<grid, threads, smem_bytes, stream>>>(p, ws);
    FLASHATTN_CUDA_CHECK(cudaGetLastError());
  };
  auto launch_dkdv_sm80 = [&] {
    using Tile = BwdTileFor<kHeadDim>;
    launch_dkdv(flash_bwd_dkdv_kernel<T, Tile, kScoreMods>, dkdv_grid(p, Tile::kBlockN, false),
                Tile::kThreads, Tile::template smem_bytes<T>());
  };
  if constexpr (!kScoreMods && sm90::kHasBwdTile<kHeadDim>) {
    using Tile = sm90::BwdTile<kHeadDim>;
    if (hopper) {
      const bool det = p.deterministic;
      launch_dkdv(det ? sm90::flash_bwd_dkdv_kernel<T, Tile, true>
                      : sm90::flash_bwd_dkdv_kernel<T, Tile, false>,
                  dkdv_grid(p, Tile::kBlockN, det), Tile::kThreadsAll, Tile::kSmemBytesAll);
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
    using Dq = DqTile<kHeadDim>;
    constexpr size_t kSmemBytes = Dq::kSmemElems * sizeof(T);
    auto kernel = flash_bwd_dq_kernel<T, Dq, kScoreMods>;
    allow_dynamic_smem(kernel, kSmemBytes);
    const dim3 grid(static_cast<unsigned>((p.seqlen_q + Dq::kBlockM - 1) / Dq::kBlockM), heads_q,
                    batch);
    kernel<<<grid, Dq::kThreads, kSmemBytes, stream>>>(p, ws);
    FLASHATTN_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace flashattn::detail::cuda
