// FlashAttention forward on Hopper tensor cores (wgmma; sm_90a).
//
// One thread block per (query block of 128 rows, query head, batch): two warpgroups, each owning
// 64 whole rows, so the online softmax never crosses warps. Q, K and V sit in shared memory in
// the 128-byte-swizzled layout wgmma reads (wgmma.cuh); K and V stream through two stages with
// cp.async. S = Q Kᵀ runs from shared memory (SS); O += P V takes P from registers (RS), straight
// from the softmax, and V from shared memory read N-major (no transposed copy).
//
// Per key block, each warpgroup issues S(next) = Q K(next)ᵀ and O += P V(current) back to back,
// then computes the softmax of S(next) while O += P V still runs on the tensor cores: the
// exp2 work of one block overlaps the matrix work of the other. Key blocks are walked from the
// last to the first, as in the sm80 kernel, and the mask is applied on boundary blocks only.
//
// kScoreMods: the variant that applies softmax_scale before the max (any sign), softcap, ALiBi
// and dropout (the same Philox mapping as the sm80 kernel and the CPU: the accumulator fragments
// of a warp have the mma.sync m16n8 layout). The plain variant folds the scale into exp2.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/params.h"
#include "common/philox.h"
#include "cuda/common/masking.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/sm90/wgmma.cuh"

namespace flashattn::detail::cuda::sm90 {

template <int kHeadDim_, int kBlockN_, int kWarpgroups_ = 2, int kMinBlocks_ = 1,
          bool kOverlap_ = true>
struct FwdTile {
  static constexpr int kHeadDim = kHeadDim_;  // compiled (padded) head dim, a multiple of 64
  static constexpr int kWarpgroups = kWarpgroups_;
  static constexpr int kBlockM = 64 * kWarpgroups;  // query rows of one thread block
  static constexpr int kBlockN = kBlockN_;          // keys of one main-loop step
  static constexpr int kMinBlocks = kMinBlocks_;    // thread blocks an SM (bounds the registers)
  static constexpr int kThreads = kWarpgroups * kWarpgroupThreads;
  // S(i + 1) = Q K(i + 1)ᵀ issued with P V(i), the softmax between: two S accumulators live.
  static constexpr bool kOverlap = kOverlap_;
  static constexpr int kSRegs = kBlockN / 2;   // S accumulator registers a thread (m64 × kBlockN)
  static constexpr int kORegs = kHeadDim / 2;  // O accumulator registers a thread (m64 × kHeadDim)
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKvBytes = kBlockN * kHeadDim * 2;
  // sQ, then two stages of sK and of sV, each 1024-byte aligned; 1 KB of slack to align the base.
  static constexpr int kSmemBytes = kQBytes + 4 * kKvBytes + 1024;

  static_assert(kHeadDim % 64 == 0 && kBlockN % 64 == 0, "whole 128-byte swizzle blocks");
  static_assert(kKvBytes % 1024 == 0, "stages start on swizzle atoms");
};

// Tiles per head dim, chosen with bench/tune_fwd_sm90.cu on an H100 (docs/tuning.md, bf16, 16k
// tokens). Always two warpgroups (128 rows) a thread block.
// - d ≤ 128: two thread blocks an SM (≤ 128 registers a thread), each running S, softmax and P V
//   one after the other; the two blocks fill each other's gaps. At d = 64 this beat one block an
//   SM with S and P V overlapped inside it by 7–25% (403 vs 300 TFLOP/s at seqlen 4k, 128 keys a
//   step); at d = 128 by 2–14% with 64 keys a step (444 vs 413 at 4k), except causal 16k (−4%).
// - d = 256: the O accumulator alone takes 128 registers: one block an SM, S(i + 1) and P V(i)
//   overlapped inside it, 64 keys a step (436 vs 288 TFLOP/s for the sm80 kernel at 4k).
// - The score-mods variant keeps one block an SM with S and P V overlapped at every head dim:
//   under the 128-register cap of two blocks it spills 170–290 bytes.
template <int kHeadDim, bool kScoreMods>
struct FwdTileFor;
template <bool kScoreMods>
struct FwdTileFor<64, kScoreMods>
    : std::conditional_t<kScoreMods, FwdTile<64, 128, 2, 1, true>, FwdTile<64, 128, 2, 2, false>> {};
template <bool kScoreMods>
struct FwdTileFor<128, kScoreMods>
    : std::conditional_t<kScoreMods, FwdTile<128, 128, 2, 1, true>, FwdTile<128, 64, 2, 2, false>> {};
template <bool kScoreMods>
struct FwdTileFor<256, kScoreMods> : FwdTile<256, 64, 2, 1, true> {};

template <int kHeadDim>
inline constexpr bool kHasFwdTile = kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256;

template <class T, class Tile, bool kScoreMods>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocks)
    flash_fwd_kernel(const __grid_constant__ AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kHeadDim = Tile::kHeadDim;
  constexpr int kSRegs = Tile::kSRegs, kORegs = Tile::kORegs;
  constexpr int kNTiles = kBlockN / 8;  // n8 column tiles of S
  constexpr int kDTiles = kHeadDim / 8;
  constexpr float kNegInf = -__builtin_huge_valf();
  using Mma = Wgmma<T, kBlockN>;
  using MmaO = Wgmma<T, kHeadDim>;

  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_address(smem_raw) & 1023)) & 1023);
  T* sQ = reinterpret_cast<T*>(smem);
  // Stage i % 2 of K and V (step i of the main loop).
  auto sK = [&](int i) { return reinterpret_cast<T*>(smem + Tile::kQBytes + (i % 2) * Tile::kKvBytes); };
  auto sV = [&](int i) {
    return reinterpret_cast<T*>(smem + Tile::kQBytes + (2 + i % 2) * Tile::kKvBytes);
  };

  // ---- Block geometry ----
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const SequenceInfo seq = sequence_info(p, b);
  const int64_t m0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kBlockM;
  if (m0 >= seq.seqlen_q) return;
  const int wg = static_cast<int>(threadIdx.x) / kWarpgroupThreads;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int row0 = wg * 64 + (static_cast<int>(threadIdx.x) / 32 % 4) * 16;  // warp's first row
  const int64_t hk = h / p.group;
  const BlockRange key_blocks = visible_key_blocks(p, seq, m0, kBlockM, kBlockN);
  const int n_blocks = key_blocks.end - key_blocks.first;

  const T* q = static_cast<const T*>(p.q) + b * p.q_stride.batch +
               (seq.q_start + m0) * p.q_stride.row + h * p.q_stride.head;
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride.batch + seq.k_start * p.k_stride.row +
               hk * p.k_stride.head;
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride.batch + seq.k_start * p.v_stride.row +
               hk * p.v_stride.head;
  const int head_dim = static_cast<int>(p.head_dim);

  float acc_o[kORegs];
#pragma unroll
  for (int i = 0; i < kORegs; ++i) acc_o[i] = 0.0f;
  float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.0f, 0.0f};
  uint32_t pf[kBlockN / 16][4];  // P of the current block as wgmma A fragments
  const float mul = kScoreMods ? kLog2e : p.scale_log2;
  float alibi_slope = 0.0f;
  if (kScoreMods && p.alibi_slopes != nullptr) alibi_slope = p.alibi_slopes[b * p.alibi_batch_stride + h];
  const uint64_t dropout_stream_id = detail::dropout_stream(p.dropout_offset, b, h, p.heads_q);

  // Key block of step i (blocks are walked last to first) and its first key.
  auto key_start = [&](int i) { return static_cast<int64_t>(key_blocks.end - 1 - i) * kBlockN; };
  auto load_k = [&](int i) {
    const int64_t n0 = key_start(i);
    load_swizzled_async<Tile::kThreads, kBlockN, kHeadDim>(
        sK(i), k + n0 * p.k_stride.row, p.k_stride.row, seq.seqlen_k - n0, head_dim);
  };
  auto load_v = [&](int i) {
    const int64_t n0 = key_start(i);
    load_swizzled_async<Tile::kThreads, kBlockN, kHeadDim>(
        sV(i), v + n0 * p.v_stride.row, p.v_stride.row, seq.seqlen_k - n0, head_dim);
  };

  // S = Q K(step i)ᵀ for this warpgroup's 64 rows, issued (not waited for).
  auto issue_s = [&](float (&s)[kSRegs], int i) {
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      const int block = kk / 4, within = (kk % 4) * 32;
      const uint64_t da = make_desc(reinterpret_cast<const unsigned char*>(sQ) +
                                        block * kBlockM * 128 + wg * 64 * 128 + within, 16);
      const uint64_t db = make_desc(reinterpret_cast<const unsigned char*>(sK(i)) +
                                        block * kBlockN * 128 + within, 16);
      Mma::template ss<0, 0>(s, da, db, kk > 0);
    }
    wgmma_commit();
  };
  // O += P V(step i), issued.
  auto issue_pv = [&](int i) {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint64_t db = make_desc(reinterpret_cast<const unsigned char*>(sV(i)) +
                                        kk * 16 * 128, kBlockN * 128);
      MmaO::template rs<1>(acc_o, pf[kk], db, true);
    }
    wgmma_commit();
  };

  // Score mods and mask of S(step i), then the online softmax: new row max and sum, P in place
  // (unnormalised, dropout applied); returns through `correction` the factor O must take.
  auto softmax = [&](float (&s)[kSRegs], int i, float (&correction)[2]) {
    const int64_t n0 = key_start(i);
    const ScoreGeometry geo = score_geometry(p, seq, m0, n0, kBlockM, kBlockN, row0, 0);
    if (kScoreMods || geo.need_mask) {
#pragma unroll
      for (int rh = 0; rh < 2; ++rh) {
        const RowWindow row = row_window(geo, row0 + g + 8 * rh);
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int j = nt * 8 + 2 * t + e;
            float& x = s[4 * nt + 2 * rh + e];
            float dcap;
            if constexpr (kScoreMods) x = modify_score(p, x, alibi_slope, row.diag, j, dcap);
            if (geo.need_mask && row.hides(j)) x = kNegInf;
          }
        }
      }
    }
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      float m_new = row_max[rh];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        m_new = fmaxf(m_new, fmaxf(s[4 * nt + 2 * rh], s[4 * nt + 2 * rh + 1]));
      }
      m_new = quad_max(m_new);
      const float m_scaled = m_new == kNegInf ? 0.0f : m_new * mul;
      correction[rh] = exp2_approx(row_max[rh] * mul - m_scaled);
      row_max[rh] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[4 * nt + 2 * rh + e];
          x = exp2_approx(fmaf(x, mul, -m_scaled));
          sum += x;
        }
      }
      row_sum[rh] = row_sum[rh] * correction[rh] + sum;
    }
    if (kScoreMods && p.dropout_p > 0.0f) {
      const uint32_t row_block = static_cast<uint32_t>((m0 + row0) >> 4);
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        const uint32_t col_block = static_cast<uint32_t>((n0 >> 4) + np);
        const uint32_t keep =
            dropout_keep_bits(p.dropout_seed, dropout_stream_id, row_block, col_block,
                              static_cast<uint32_t>(lane), p.dropout_threshold);
#pragma unroll
        for (int slot = 0; slot < 8; ++slot) {
          if (!((keep >> slot) & 1u)) s[4 * (2 * np + slot / 4) + slot % 4] = 0.0f;
        }
      }
    }
  };
  auto rescale_o = [&](const float (&correction)[2]) {
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      acc_o[4 * dt + 0] *= correction[0];
      acc_o[4 * dt + 1] *= correction[0];
      acc_o[4 * dt + 2] *= correction[1];
      acc_o[4 * dt + 3] *= correction[1];
    }
  };
  auto make_p_fragments = [&](const float (&s)[kSRegs]) {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      pf[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
      pf[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
      pf[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
      pf[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };

  if (n_blocks > 0) {
    // ---- Prologue: groups [Q, K0] [V0] [K1] [V1] in flight (empty groups keep the count) ----
    load_swizzled_async<Tile::kThreads, kBlockM, kHeadDim>(sQ, q, p.q_stride.row,
                                                           seq.seqlen_q - m0, head_dim);
    load_k(0);
    cp_async_commit();
    load_v(0);
    cp_async_commit();
    if (n_blocks > 1) load_k(1);
    cp_async_commit();
    if (n_blocks > 1) load_v(1);
    cp_async_commit();

    if constexpr (Tile::kOverlap) {
      cp_async_wait<3>();
      fence_async_shared();
      __syncthreads();
      {
        float s[kSRegs];
        wgmma_fence();
        issue_s(s, 0);
        wgmma_wait<0>();
        fence_registers(s);
        float correction[2];
        softmax(s, 0, correction);
        make_p_fragments(s);  // O is still zero: no rescale
      }

      // ---- Main loop: S(i + 1) and P V(i) in flight together; the last P V(i) after it ----
      // (No wgmma is issued under a condition: ptxas then keeps the pipeline asynchronous.)
      for (int i = 0; i + 1 < n_blocks; ++i) {
        cp_async_wait<1>();  // V(i) and K(i + 1) landed
        fence_async_shared();
        __syncthreads();
        float s[kSRegs];
        wgmma_fence();
        issue_s(s, i + 1);
        issue_pv(i);
        wgmma_wait<1>();  // S(i + 1) done; P V(i) may still run
        fence_registers(s);
        float correction[2];
        softmax(s, i + 1, correction);
        wgmma_wait<0>();
        fence_registers(acc_o);
        fence_registers(pf);
        rescale_o(correction);
        make_p_fragments(s);
        __syncthreads();  // every warpgroup is done with K(i) and V(i): refill their stage
        if (i + 2 < n_blocks) load_k(i + 2);
        cp_async_commit();
        if (i + 2 < n_blocks) load_v(i + 2);
        cp_async_commit();
      }
      cp_async_wait<1>();  // V(last) landed
      fence_async_shared();
      __syncthreads();
      wgmma_fence();
      issue_pv(n_blocks - 1);
      wgmma_wait<0>();
      fence_registers(acc_o);
    } else {
      // ---- Main loop, one block at a time: S(i), softmax, P V(i). Registers for one S only;
      // a second thread block on the SM fills the tensor cores meanwhile. ----
      for (int i = 0; i < n_blocks; ++i) {
        cp_async_wait<2>();  // K(i) and V(i) landed
        fence_async_shared();
        __syncthreads();
        float s[kSRegs];
        wgmma_fence();
        issue_s(s, i);
        wgmma_wait<0>();
        fence_registers(s);
        float correction[2];
        softmax(s, i, correction);
        rescale_o(correction);
        make_p_fragments(s);
        wgmma_fence();
        issue_pv(i);
        wgmma_wait<0>();
        fence_registers(acc_o);
        __syncthreads();  // every warpgroup is done with K(i) and V(i): refill their stage
        if (i + 2 < n_blocks) load_k(i + 2);
        cp_async_commit();
        if (i + 2 < n_blocks) load_v(i + 2);
        cp_async_commit();
      }
    }
  }

  // ---- Epilogue: the one rescale by 1/l, O and LSE out ----
#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    const float l = quad_sum(row_sum[rh]);
    const int64_t i = m0 + row0 + g + 8 * rh;
    if (i >= seq.seqlen_q) continue;
    // l = 0: no visible key, O = 0 and LSE −inf; a NaN score makes l, O and LSE NaN.
    const float inv = l == 0.0f ? 0.0f : p.dropout_scale / l;
    T* o = static_cast<T*>(p.out) + b * p.out_stride.batch + (seq.q_start + i) * p.out_stride.row +
           h * p.out_stride.head;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + 2 * t;
      if (col < head_dim) {
        *reinterpret_cast<uint32_t*>(o + col) =
            pack2<T>(acc_o[4 * dt + 2 * rh] * inv, acc_o[4 * dt + 2 * rh + 1] * inv);
      }
    }
    if (t == 0 && p.lse != nullptr) {
      p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + seq.q_start + i] =
          l == 0.0f ? kNegInf : row_max[rh] * mul * kLn2 + logf(l);
    }
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

}  // namespace flashattn::detail::cuda::sm90
