// The backward's pieces that the sm80 and sm90 kernels share: the scratch (BwdWorkspace), step 1
// (flash_bwd_preprocess_kernel: D = rowsum(dO ∘ O), zeroing the dQ accumulator and the turn
// counters), the query side of a key block's walk in step 2, and step 3
// (flash_bwd_convert_dq_kernel). The steps themselves: sm80/flash_bwd_kernel.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/block_schedule.h"
#include "common/params.h"
#include "cuda/common/mma.cuh"
#include "cuda/common/tile_io.cuh"

namespace flashattn::detail::cuda {

// The Hopper kernel's deterministic mode takes its dQ turns per kDqTurnRows query rows (its step):
// turn_blocks(rows) counters a (batch, query head).
constexpr int kDqTurnRows = 64;

FLASHATTN_HOST_DEVICE int64_t turn_blocks(int64_t seqlen_q) {
  return (seqlen_q + kDqTurnRows - 1) / kDqTurnRows;
}

// Scratch of one backward call, (batch, heads_q, rows) with rows = p.seqlen_q (the longest
// sequence of a varlen batch): row i of sequence b, head h is at (b · heads_q + h) · rows + i.
struct BwdWorkspace {
  float* dsum = nullptr;      // D = rowsum(dO ∘ O)
  float* dq_accum = nullptr;  // (…, head_dim) fp32 sums of dQ; null when the dQ kernel runs
  int64_t rows = 0;
  // The Hopper kernel's deterministic mode: one counter a (batch, query head, query block) that
  // orders the key blocks' dQ atomics (zeroed by the preprocess kernel); null otherwise.
  int* dq_turn = nullptr;  // (batch, query head, turn_blocks(rows))
};

// ---- Step 1 ----------------------------------------------------------------------------------
// One warp per row, 8 columns a lane (head_dim ≤ 256).
constexpr int kPreprocessWarps = 4;
constexpr int kPreprocessRowsPerWarp = 4;

template <class T>
__global__ void __launch_bounds__(32 * kPreprocessWarps)
    flash_bwd_preprocess_kernel(const __grid_constant__ AttentionParams p,
                                const __grid_constant__ BwdWorkspace ws) {
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const SequenceInfo seq = sequence_info(p, b);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int col = lane * 8;
  const int64_t row0 =
      (static_cast<int64_t>(blockIdx.x) * kPreprocessWarps + warp) * kPreprocessRowsPerWarp;
  for (int r = 0; r < kPreprocessRowsPerWarp; ++r) {
    const int64_t i = row0 + r;
    if (i >= seq.seqlen_q) break;
    const int64_t ws_row = (b * p.heads_q + h) * ws.rows + i;
    float sum = 0.0f;
    if (col < p.head_dim_v) {
      const T* o = static_cast<const T*>(p.out) + b * p.out_stride.batch +
                   (seq.q_start + i) * p.out_stride.row + h * p.out_stride.head + col;
      const T* d = static_cast<const T*>(p.dout) + b * p.dout_stride.batch +
                   (seq.q_start + i) * p.dout_stride.row + h * p.dout_stride.head + col;
      const uint4 ov = *reinterpret_cast<const uint4*>(o);
      const uint4 dv = *reinterpret_cast<const uint4*>(d);
      const T* oe = reinterpret_cast<const T*>(&ov);
      const T* de = reinterpret_cast<const T*>(&dv);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum += static_cast<float>(oe[e]) * static_cast<float>(de[e]);
    }
    if (ws.dq_accum != nullptr && col < p.head_dim) {
      float4* acc = reinterpret_cast<float4*>(ws.dq_accum + ws_row * p.head_dim + col);
      acc[0] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      acc[1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    // The turn counter of each query block that holds a row of the sequence (the only ones the
    // dK/dV kernel reads).
    if (ws.dq_turn != nullptr && lane == 0 && i % kDqTurnRows == 0) {
      ws.dq_turn[(b * p.heads_q + h) * turn_blocks(ws.rows) + i / kDqTurnRows] = 0;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) ws.dsum[ws_row] = sum;
  }
}

// ---- Step 2: the query side of a key block's walk --------------------------------------------
// The query side of a key block's walk: the query heads of its GQA group (outer) and the query
// blocks of block_m rows that see at least one of its keys (inner; common/block_schedule.h).
struct QueryWalk {
  int64_t hk = 0, group = 0;  // the kv head, and the query heads a kv head
  int m_block_min = 0;        // first query block
  int m_blocks = 0;           // query blocks a head
  int steps = 0;              // m_blocks · group
  __device__ __forceinline__ int64_t head(int it) const { return hk * group + it / m_blocks; }
  __device__ __forceinline__ int64_t m0(int it, int block_m) const {
    return static_cast<int64_t>(m_block_min + it % m_blocks) * block_m;
  }
};

__device__ __forceinline__ QueryWalk query_walk(const AttentionParams& p, const SequenceInfo& seq,
                                                int64_t hk, int64_t n0, int block_m, int block_n) {
  const BlockSpan span = query_blocks_seeing(seq.seqlen_q, seq.seqlen_k, p.window_left,
                                             p.window_right, n0, block_m, block_n);
  QueryWalk w;
  w.hk = hk;
  w.group = p.group;
  w.m_block_min = static_cast<int>(span.begin);
  w.m_blocks = static_cast<int>(span.end) - w.m_block_min;
  w.steps = w.m_blocks * static_cast<int>(p.group);
  return w;
}

// Row m0 of query head h in Q and dO (a step's query-side tiles).
template <class T>
struct QueryRows {
  const T* q;
  const T* dout;
};

template <class T>
__device__ __forceinline__ QueryRows<T> query_rows(const AttentionParams& p,
                                                   const SequenceInfo& seq, int64_t b, int64_t h,
                                                   int64_t m0) {
  QueryRows<T> r;
  r.q = static_cast<const T*>(p.q) + b * p.q_stride.batch + (seq.q_start + m0) * p.q_stride.row +
        h * p.q_stride.head;
  r.dout = static_cast<const T*>(p.dout) + b * p.dout_stride.batch +
           (seq.q_start + m0) * p.dout_stride.row + h * p.dout_stride.head;
  return r;
}

// LSE and D of rows [m0, m0 + kBlockM) of query head h → s_lse, s_dsum (cp.async, in the group of
// the step's Q/dO tile; threads below kBlockM, one row each). Rows past the sequence read as 0;
// load_row_stats (sm80) and the sm90 kernel give them P = 0.
template <int kBlockM>
__device__ __forceinline__ void load_lse_dsum_async(float* s_lse, float* s_dsum,
                                                    const AttentionParams& p,
                                                    const BwdWorkspace& ws,
                                                    const SequenceInfo& seq, int64_t b, int64_t h,
                                                    int64_t m0) {
  const int r = static_cast<int>(threadIdx.x);
  if (r < kBlockM) {
    const bool valid = m0 + r < seq.seqlen_q;
    cp_async_4(s_lse + r,
               valid ? p.lse + b * p.lse_batch_stride + h * p.lse_head_stride + seq.q_start + m0 + r
                     : p.lse,
               valid);
    cp_async_4(s_dsum + r, valid ? ws.dsum + (b * p.heads_q + h) * ws.rows + m0 + r : ws.dsum,
               valid);
  }
}

// ---- Step 3 ----------------------------------------------------------------------------------
// dQ = accumulator · scale; one warp per row, 8 columns a lane.
template <class T>
__global__ void __launch_bounds__(32 * kPreprocessWarps)
    flash_bwd_convert_dq_kernel(const __grid_constant__ AttentionParams p,
                                const __grid_constant__ BwdWorkspace ws) {
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const SequenceInfo seq = sequence_info(p, b);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int col = lane * 8;
  if (col >= p.head_dim) return;
  const int64_t row0 =
      (static_cast<int64_t>(blockIdx.x) * kPreprocessWarps + warp) * kPreprocessRowsPerWarp;
  for (int r = 0; r < kPreprocessRowsPerWarp; ++r) {
    const int64_t i = row0 + r;
    if (i >= seq.seqlen_q) break;
    const float4* acc = reinterpret_cast<const float4*>(
        ws.dq_accum + ((b * p.heads_q + h) * ws.rows + i) * p.head_dim + col);
    const float4 lo = acc[0], hi = acc[1];
    uint4 packed;
    packed.x = pack2<T>(lo.x * p.scale, lo.y * p.scale);
    packed.y = pack2<T>(lo.z * p.scale, lo.w * p.scale);
    packed.z = pack2<T>(hi.x * p.scale, hi.y * p.scale);
    packed.w = pack2<T>(hi.z * p.scale, hi.w * p.scale);
    T* dq = static_cast<T*>(p.dq) + b * p.dq_stride.batch + (seq.q_start + i) * p.dq_stride.row +
            h * p.dq_stride.head + col;
    *reinterpret_cast<uint4*>(dq) = packed;
  }
}

}  // namespace flashattn::detail::cuda
