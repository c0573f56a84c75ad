// FlashAttention-2 backward on tensor cores (mma.sync m16n8k16; sm80 and later).
//
// Three steps, all on the caller's stream:
//   1. flash_bwd_preprocess_kernel: D = rowsum(dO ∘ O) in fp32; zeroes the fp32 dQ accumulator
//      (and the Hopper deterministic mode's turn counters).
//   2. flash_bwd_dkdv_kernel: one thread block per (key block, kv head, batch). It keeps its K and
//      V tile in shared memory and dK, dV in registers while it walks every query head of its
//      group and every query block that sees its keys: S and P are recomputed from the forward's
//      LSE (same masks, softcap, ALiBi, the same dropout mask regenerated), then
//      dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − D), dK += dSᵀ Q, and dQ += dS K is added to the
//      fp32 accumulator with atomics. GQA needs no (heads_q)-sized dK/dV: a thread block sums its
//      group itself.
//   3. flash_bwd_convert_dq_kernel: dQ = accumulator · scale in the input dtype.
// The deterministic mode skips the atomics in step 2 and runs flash_bwd_dq_kernel instead of
// step 3: one thread block per query block recomputes S, dP and dS and keeps dQ in registers, so
// every sum is taken in a fixed order. Steps 1 and 3 and the scratch's layout are shared with the
// sm90 kernel: cuda/common/bwd_common.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/block_schedule.h"
#include "common/params.h"
#include "common/philox.h"
#include "cuda/common/bwd_common.cuh"
#include "cuda/common/masking.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/common/tile_io.cuh"
#include "cuda/sm80/bwd_tile.h"

namespace flashattn::detail::cuda {

// ---- Shared by steps 2 and the deterministic dQ kernel -----------------------------------------
// LSE (in log2 units) and D of the rows this thread holds, from arrays of the warp's rows
// (row0 = the warp's first row, relative to the block; rows_valid = rows of the block in the
// sequence). Rows past the sequence get LSE = +inf, and so P = 0, as do rows without any visible
// key (LSE = −inf in the forward).
template <int kMTiles>
__device__ __forceinline__ void load_row_stats(int64_t rows_valid, const float* lse,
                                               const float* dsum_in, int row0,
                                               float (&lse2)[kMTiles][2], float (&dsum)[kMTiles][2]) {
  constexpr float kInf = __builtin_huge_valf();
  const int g = (static_cast<int>(threadIdx.x) % 32) / 4;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const int r = mt * 16 + g + 8 * rh;
      const bool valid = row0 + r < rows_valid;
      const float l = valid ? lse[r] : -kInf;
      lse2[mt][rh] = l == -kInf ? kInf : l * kLog2e;
      dsum[mt][rh] = valid ? dsum_in[r] : 0.0f;
    }
  }
}

// From the S = Q Kᵀ and dP = dO Vᵀ fragments of one warp to P (dropped entries zeroed, not yet
// scaled by 1/(1 − p)) in s and dS = P ∘ (dP − D) · (softcap derivative) in dp, both in the raw
// units of Q Kᵀ (the softmax scale is applied by the caller at the end).
template <bool kScoreMods, int kMTiles, int kNTiles>
__device__ __forceinline__ void scores_to_grads(const AttentionParams& p, const ScoreGeometry& geo,
                                                float (&s)[kMTiles][kNTiles][4],
                                                float (&dp)[kMTiles][kNTiles][4],
                                                const float (&lse2)[kMTiles][2],
                                                const float (&dsum)[kMTiles][2], float alibi_slope,
                                                uint64_t dropout_stream_id, int64_t m0, int64_t n0) {
  constexpr float kNegInf = -__builtin_huge_valf();
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  const float mul = kScoreMods ? kLog2e : p.scale_log2;
  const bool dropout = kScoreMods && p.dropout_p > 0.0f;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const int row_base = geo.row0 + mt * 16 + g;
#pragma unroll
    for (int np = 0; np < kNTiles / 2; ++np) {
      uint32_t keep_bits = 0xffu;
      if (dropout) {
        const uint32_t row_block = static_cast<uint32_t>((m0 + geo.row0 + mt * 16) >> 4);
        const uint32_t col_block = static_cast<uint32_t>(((n0 + geo.col0) >> 4) + np);
        keep_bits = dropout_keep_bits(p.dropout_seed, dropout_stream_id, row_block, col_block,
                                      static_cast<uint32_t>(lane), p.dropout_threshold);
      }
#pragma unroll
      for (int slot = 0; slot < 8; ++slot) {
        const int nt = 2 * np + slot / 4, e = slot % 4, rh = e / 2;
        const int row = row_base + 8 * rh;
        const int j = geo.col0 + nt * 8 + 2 * t + e % 2;
        float x = s[mt][nt][e];
        float dcap = 1.0f;
        if constexpr (kScoreMods) {
          x = modify_score_exact(p, x, alibi_slope, row_window(geo, row).diag, j, dcap);
        }
        // (The window's bounds only where the step needs a mask: computed per element there. One
        // RowWindow local for both uses made ptxas spill 96 bytes at d 128 with score mods, not 52.)
        if (geo.need_mask && row_window(geo, row).hides(j)) x = kNegInf;
        const float prob = exp2_approx(fmaf(x, mul, -lse2[mt][rh]));
        float dpv = dp[mt][nt][e];
        if (dropout) {
          const bool keep = (keep_bits >> slot) & 1u;
          dpv = keep ? dpv * p.dropout_scale : 0.0f;
          s[mt][nt][e] = keep ? prob : 0.0f;
        } else {
          s[mt][nt][e] = prob;
        }
        dp[mt][nt][e] = prob * (dpv - dsum[mt][rh]) * dcap;
      }
    }
  }
}

// Fragments (rows of 16, pairs of columns) → shared memory [row][col] in T.
template <class T, int kMTiles, int kNTiles>
__device__ __forceinline__ void store_fragments(T* smem, int pitch,
                                                const float (&f)[kMTiles][kNTiles][4]) {
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      T* dst = smem + (mt * 16 + g) * pitch + nt * 8 + 2 * t;
      *reinterpret_cast<uint32_t*>(dst) = pack2<T>(f[mt][nt][0], f[mt][nt][1]);
      *reinterpret_cast<uint32_t*>(dst + 8 * pitch) = pack2<T>(f[mt][nt][2], f[mt][nt][3]);
    }
  }
}

// ---- Step 2 ----------------------------------------------------------------------------------
template <class T, class Tile, bool kScoreMods>
__global__ void __launch_bounds__(Tile::kThreads)
    flash_bwd_dkdv_kernel(const __grid_constant__ AttentionParams p,
                          const __grid_constant__ BwdWorkspace ws) {
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN;
  constexpr int kPitch = Tile::kPitch, kPitchP = Tile::kPitchP;

  // sK, sV: (kBlockN, kPitch)   sQ[2], sdO[2]: (kBlockM, kPitch)   sP, sdS: (kBlockM, kPitchP)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + kBlockN * kPitch;
  T* sQ0 = sV + kBlockN * kPitch;
  T* sdO0 = sQ0 + 2 * kBlockM * kPitch;
  T* sP = sdO0 + 2 * kBlockM * kPitch;
  T* sdS = sP + kBlockM * kPitchP;
  float* sLse0 = reinterpret_cast<float*>(sdS + kBlockM * kPitchP);  // [2][kBlockM]
  float* sDsum0 = sLse0 + 2 * kBlockM;                                // [2][kBlockM]

  const int64_t b = blockIdx.z, hk = blockIdx.y;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBlockN;
  const SequenceInfo seq = sequence_info(p, b);
  // Rows of dK/dV this block writes: keys past seqused_k get zeros; a varlen sequence's rows end
  // at its own length.
  const int64_t k_rows = key_rows(p, b);
  if (n0 >= k_rows) return;

  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int head_dim = static_cast<int>(p.head_dim);

  const QueryWalk walk = query_walk(p, seq, hk, n0, kBlockM, kBlockN);
  const int steps = walk.steps;

  const T* k = static_cast<const T*>(p.k) + b * p.k_stride.batch +
               (seq.k_start + n0) * p.k_stride.row + hk * p.k_stride.head;
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride.batch +
               (seq.k_start + n0) * p.v_stride.row + hk * p.v_stride.head;

  auto load_query_side = [&](int it, int buf) {
    const int64_t h = walk.head(it), m0 = walk.m0(it, kBlockM);
    const QueryRows<T> rows = query_rows<T>(p, seq, b, h, m0);
    load_rows_async<Tile::kThreads, kBlockM, Tile::kHeadDim, kPitch>(
        sQ0 + buf * kBlockM * kPitch, rows.q, p.q_stride.row, seq.seqlen_q - m0, head_dim);
    load_rows_async<Tile::kThreads, kBlockM, Tile::kHeadDim, kPitch>(
        sdO0 + buf * kBlockM * kPitch, rows.dout, p.dout_stride.row, seq.seqlen_q - m0, head_dim);
    load_lse_dsum_async<kBlockM>(sLse0 + buf * kBlockM, sDsum0 + buf * kBlockM, p, ws, seq, b, h,
                                 m0);
  };

  // Warp positions in the three splits.
  const int sdp_row0 = (warp % Tile::kSdpWarpsM) * Tile::kSdpRows;
  const int sdp_col0 = (warp / Tile::kSdpWarpsM) * Tile::kSdpCols;
  const int dkv_row0 = (warp % Tile::kDkvWarpsN) * Tile::kDkvRows;
  const int dkv_col0 = (warp / Tile::kDkvWarpsN) * Tile::kDkvCols;
  const int dq_row0 = (warp % Tile::kDqWarpsM) * Tile::kDqRows;
  const int dq_col0 = (warp / Tile::kDqWarpsM) * Tile::kDqCols;

  float acc_dk[Tile::kDkvMTiles][Tile::kDkvNTiles][4];
  float acc_dv[Tile::kDkvMTiles][Tile::kDkvNTiles][4];
  zero_fragments(acc_dk);
  zero_fragments(acc_dv);

  if (steps > 0) {
    load_rows_async<Tile::kThreads, kBlockN, Tile::kHeadDim, kPitch>(sK, k, p.k_stride.row,
                                                                     seq.seqlen_k - n0, head_dim);
    load_rows_async<Tile::kThreads, kBlockN, Tile::kHeadDim, kPitch>(sV, v, p.v_stride.row,
                                                                     seq.seqlen_k - n0, head_dim);
    load_query_side(0, 0);
    cp_async_commit();
  }

  for (int it = 0; it < steps; ++it) {
    const int buf = it & 1;
    const int64_t h = walk.head(it), m0 = walk.m0(it, kBlockM);
    const T* sQ = sQ0 + buf * kBlockM * kPitch;
    const T* sdO = sdO0 + buf * kBlockM * kPitch;
    cp_async_wait<0>();  // Q, dO of this step (and K, V) landed
    __syncthreads();     // … for every thread; everyone is done with the previous step
    if (it + 1 < steps) {
      load_query_side(it + 1, buf ^ 1);
      cp_async_commit();
    }

    float lse2[Tile::kSdpMTiles][2], dsum[Tile::kSdpMTiles][2];
    load_row_stats(seq.seqlen_q - m0, sLse0 + buf * kBlockM + sdp_row0,
                   sDsum0 + buf * kBlockM + sdp_row0, sdp_row0, lse2, dsum);
    float alibi_slope = 0.0f;
    if (kScoreMods && p.alibi_slopes != nullptr) {
      alibi_slope = p.alibi_slopes[b * p.alibi_batch_stride + h];
    }

    // S = Q Kᵀ and dP = dO Vᵀ on this warp's (kSdpRows × kSdpCols) share.
    float s[Tile::kSdpMTiles][Tile::kSdpNTiles][4];
    float dp[Tile::kSdpMTiles][Tile::kSdpNTiles][4];
    zero_fragments(s);
    zero_fragments(dp);
    warp_gemm_smem<T, Tile::kSdpMTiles, Tile::kSdpNTiles, Tile::kHeadDim, false, false>(
        s, sQ + sdp_row0 * kPitch, kPitch, sK + sdp_col0 * kPitch, kPitch);
    warp_gemm_smem<T, Tile::kSdpMTiles, Tile::kSdpNTiles, Tile::kHeadDim, false, false>(
        dp, sdO + sdp_row0 * kPitch, kPitch, sV + sdp_col0 * kPitch, kPitch);

    const ScoreGeometry geo =
        score_geometry(p, seq, m0, n0, kBlockM, kBlockN, sdp_row0, sdp_col0);
    scores_to_grads<kScoreMods>(p, geo, s, dp, lse2, dsum, alibi_slope,
                                detail::dropout_stream(p.dropout_offset, b, h, p.heads_q), m0, n0);
    store_fragments<T>(sP + sdp_row0 * kPitchP + sdp_col0, kPitchP, s);
    store_fragments<T>(sdS + sdp_row0 * kPitchP + sdp_col0, kPitchP, dp);
    __syncthreads();  // P and dS of the whole tile are in shared memory

    // dV += Pᵀ dO and dK += dSᵀ Q on this warp's (kDkvRows keys × kDkvCols dims).
    warp_gemm_smem<T, Tile::kDkvMTiles, Tile::kDkvNTiles, kBlockM, true, true>(
        acc_dv, sP + dkv_row0, kPitchP, sdO + dkv_col0, kPitch);
    warp_gemm_smem<T, Tile::kDkvMTiles, Tile::kDkvNTiles, kBlockM, true, true>(
        acc_dk, sdS + dkv_row0, kPitchP, sQ + dkv_col0, kPitch);

    // dQ += dS K, added to the fp32 accumulator (the deterministic mode computes dQ apart).
    if (ws.dq_accum != nullptr) {
      float* dq_rows = ws.dq_accum + ((b * p.heads_q + h) * ws.rows + m0) * head_dim;
#pragma unroll
      for (int chunk = 0; chunk < Tile::kDqChunks; ++chunk) {
        const int chunk_col0 = dq_col0 + chunk * Tile::kDqChunkNTiles * 8;
        float acc_dq[Tile::kDqMTiles][Tile::kDqChunkNTiles][4];
        zero_fragments(acc_dq);
        warp_gemm_smem<T, Tile::kDqMTiles, Tile::kDqChunkNTiles, kBlockN, false, true>(
            acc_dq, sdS + dq_row0 * kPitchP, kPitchP, sK + chunk_col0, kPitch);
#pragma unroll
        for (int mt = 0; mt < Tile::kDqMTiles; ++mt) {
#pragma unroll
          for (int rh = 0; rh < 2; ++rh) {
            const int row = dq_row0 + mt * 16 + g + 8 * rh;
            if (m0 + row >= seq.seqlen_q) continue;
#pragma unroll
            for (int nt = 0; nt < Tile::kDqChunkNTiles; ++nt) {
              const int col = chunk_col0 + nt * 8 + 2 * t;
              if (col < head_dim) {
                atomicAdd(dq_rows + row * head_dim + col, acc_dq[mt][nt][2 * rh]);
                atomicAdd(dq_rows + row * head_dim + col + 1, acc_dq[mt][nt][2 * rh + 1]);
              }
            }
          }
        }
      }
    }
  }

  // ---- Epilogue: dK = scale · Σ dSᵀ Q, dV = Σ Pᵀ dO / (1 − p) ----
  T* dk = static_cast<T*>(p.dk) + b * p.dk_stride.batch + (seq.k_start + n0) * p.dk_stride.row +
          hk * p.dk_stride.head;
  T* dv = static_cast<T*>(p.dv) + b * p.dv_stride.batch + (seq.k_start + n0) * p.dv_stride.row +
          hk * p.dv_stride.head;
#pragma unroll
  for (int mt = 0; mt < Tile::kDkvMTiles; ++mt) {
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const int row = dkv_row0 + mt * 16 + g + 8 * rh;
      if (n0 + row >= k_rows) continue;
#pragma unroll
      for (int nt = 0; nt < Tile::kDkvNTiles; ++nt) {
        const int col = dkv_col0 + nt * 8 + 2 * t;
        if (col < head_dim) {
          *reinterpret_cast<uint32_t*>(dk + row * p.dk_stride.row + col) =
              pack2<T>(acc_dk[mt][nt][2 * rh] * p.scale, acc_dk[mt][nt][2 * rh + 1] * p.scale);
          *reinterpret_cast<uint32_t*>(dv + row * p.dv_stride.row + col) =
              pack2<T>(acc_dv[mt][nt][2 * rh] * p.dropout_scale,
                       acc_dv[mt][nt][2 * rh + 1] * p.dropout_scale);
        }
      }
    }
  }
}

// ---- The deterministic mode's dQ ---------------------------------------------------------------
template <class T, class Tile, bool kScoreMods>
__global__ void __launch_bounds__(Tile::kThreads)
    flash_bwd_dq_kernel(const __grid_constant__ AttentionParams p,
                        const __grid_constant__ BwdWorkspace ws) {
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kPitch = Tile::kPitch;
  constexpr int kMTiles = Tile::kMTiles, kNTiles = Tile::kNTiles, kDTiles = Tile::kDTiles;

  // sQ, sdO: (kBlockM, kPitch)   sK[2], sV[2]: (kBlockN, kPitch)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sdO = sQ + kBlockM * kPitch;
  T* sK0 = sdO + kBlockM * kPitch;
  T* sV0 = sK0 + 2 * kBlockN * kPitch;

  const int64_t b = blockIdx.z, h = blockIdx.y;
  const SequenceInfo seq = sequence_info(p, b);
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBlockM;
  if (m0 >= seq.seqlen_q) return;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t hk = h / p.group;
  const int head_dim = static_cast<int>(p.head_dim);
  const int warp_row0 = warp * Tile::kWarpRows;

  const BlockRange key_blocks = visible_key_blocks(p, seq, m0, kBlockM, kBlockN);
  const int n_block_min = key_blocks.first, n_block_max = key_blocks.end;

  const T* q = static_cast<const T*>(p.q) + b * p.q_stride.batch +
               (seq.q_start + m0) * p.q_stride.row + h * p.q_stride.head;
  const T* d = static_cast<const T*>(p.dout) + b * p.dout_stride.batch +
               (seq.q_start + m0) * p.dout_stride.row + h * p.dout_stride.head;
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride.batch + seq.k_start * p.k_stride.row +
               hk * p.k_stride.head;
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride.batch + seq.k_start * p.v_stride.row +
               hk * p.v_stride.head;
  auto load_key_side = [&](int nb, int buf) {
    const int64_t n0 = static_cast<int64_t>(nb) * kBlockN;
    load_rows_async<Tile::kThreads, kBlockN, Tile::kHeadDim, kPitch>(
        sK0 + buf * kBlockN * kPitch, k + n0 * p.k_stride.row, p.k_stride.row, seq.seqlen_k - n0,
        head_dim);
    load_rows_async<Tile::kThreads, kBlockN, Tile::kHeadDim, kPitch>(
        sV0 + buf * kBlockN * kPitch, v + n0 * p.v_stride.row, p.v_stride.row, seq.seqlen_k - n0,
        head_dim);
  };

  float acc_dq[kMTiles][kDTiles][4];
  zero_fragments(acc_dq);
  float lse2[kMTiles][2], dsum[kMTiles][2];
  load_row_stats(seq.seqlen_q - m0,
                 p.lse + b * p.lse_batch_stride + h * p.lse_head_stride + seq.q_start + m0 + warp_row0,
                 ws.dsum + (b * p.heads_q + h) * ws.rows + m0 + warp_row0, warp_row0, lse2, dsum);
  float alibi_slope = 0.0f;
  if (kScoreMods && p.alibi_slopes != nullptr) alibi_slope = p.alibi_slopes[b * p.alibi_batch_stride + h];
  const uint64_t dropout_stream_id = detail::dropout_stream(p.dropout_offset, b, h, p.heads_q);

  if (n_block_max > n_block_min) {
    load_rows_async<Tile::kThreads, kBlockM, Tile::kHeadDim, kPitch>(sQ, q, p.q_stride.row,
                                                                     seq.seqlen_q - m0, head_dim);
    load_rows_async<Tile::kThreads, kBlockM, Tile::kHeadDim, kPitch>(sdO, d, p.dout_stride.row,
                                                                     seq.seqlen_q - m0, head_dim);
    load_key_side(n_block_min, 0);
    cp_async_commit();
  }
  for (int nb = n_block_min; nb < n_block_max; ++nb) {
    const int buf = (nb - n_block_min) & 1;
    const int64_t n0 = static_cast<int64_t>(nb) * kBlockN;
    const T* sK = sK0 + buf * kBlockN * kPitch;
    const T* sV = sV0 + buf * kBlockN * kPitch;
    cp_async_wait<0>();
    __syncthreads();
    if (nb + 1 < n_block_max) {
      load_key_side(nb + 1, buf ^ 1);
      cp_async_commit();
    }

    float s[kMTiles][kNTiles][4], dp[kMTiles][kNTiles][4];
    zero_fragments(s);
    zero_fragments(dp);
    warp_gemm_smem<T, kMTiles, kNTiles, Tile::kHeadDim, false, false>(
        s, sQ + warp_row0 * kPitch, kPitch, sK, kPitch);
    warp_gemm_smem<T, kMTiles, kNTiles, Tile::kHeadDim, false, false>(
        dp, sdO + warp_row0 * kPitch, kPitch, sV, kPitch);
    const ScoreGeometry geo = score_geometry(p, seq, m0, n0, kBlockM, kBlockN, warp_row0, 0);
    scores_to_grads<kScoreMods>(p, geo, s, dp, lse2, dsum, alibi_slope, dropout_stream_id, m0, n0);

    // dQ += dS K(nb): dS goes from the accumulator straight into A fragments.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        a[mt][0] = pack2<T>(dp[mt][2 * kk][0], dp[mt][2 * kk][1]);
        a[mt][1] = pack2<T>(dp[mt][2 * kk][2], dp[mt][2 * kk][3]);
        a[mt][2] = pack2<T>(dp[mt][2 * kk + 1][0], dp[mt][2 * kk + 1][1]);
        a[mt][3] = pack2<T>(dp[mt][2 * kk + 1][2], dp[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp2 = 0; dp2 < kDTiles / 2; ++dp2) {
        uint32_t bk[4];
        ldmatrix_x4_trans(bk, sK + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kPitch +
                                  dp2 * 16 + (lane / 16) * 8);
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          mma_16816<T>(acc_dq[mt][2 * dp2], a[mt], bk[0], bk[1]);
          mma_16816<T>(acc_dq[mt][2 * dp2 + 1], a[mt], bk[2], bk[3]);
        }
      }
    }
  }

#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const int64_t i = m0 + warp_row0 + mt * 16 + g + 8 * rh;
      if (i >= seq.seqlen_q) continue;
      T* dq = static_cast<T*>(p.dq) + b * p.dq_stride.batch + (seq.q_start + i) * p.dq_stride.row +
              h * p.dq_stride.head;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        const int col = dt * 8 + 2 * t;
        if (col < head_dim) {
          *reinterpret_cast<uint32_t*>(dq + col) =
              pack2<T>(acc_dq[mt][dt][2 * rh] * p.scale, acc_dq[mt][dt][2 * rh + 1] * p.scale);
        }
      }
    }
  }
}

}  // namespace flashattn::detail::cuda
