// FlashAttention-2 forward on tensor cores (mma.sync m16n8k16; sm80 and later).
//
// One thread block per (query block of kBlockM rows, query head, batch). Each warp owns
// kWarpRows whole rows, so the online softmax never crosses warps (the decode tile aside). K and
// V tiles stream through shared memory with cp.async: V(n) is fetched while S = Q K(n)ᵀ is
// computed, K(n−1) while O += P V(n) is. Key blocks are walked from the last to the first, so the
// blocks that need a mask (the ragged end of the keys, the causal diagonal) come first and the
// rest run unmasked.
//
// kScoreMods: the variant that applies softmax_scale before the max (any sign), softcap, ALiBi
// and dropout. The plain variant folds the scale into the exp2 argument.
//
// kDecode: the variant for few query rows against many keys (a decode step; cuda/dispatch.h,
// FwdPlan), without dropout. Its tiles (DecodeTileFor, DecodeTile32For) give each group of
// Tile::kKeyWarps warps one m16 row tile, and the warps of a group split each step's keys: each
// keeps its own online softmax over its keys, and they merge (max, sum, O) once, after the last
// step. It issues V(n−1) as soon as
// O += P V(n) is done, beside K(n−1), so a step's K and V are in flight together (one more
// barrier a step; the kernel waits on DRAM, not on math). Three runtime choices: the
// query heads of one KV group share a tile's rows (p.pack_gqa: row r of the tile is query row
// r / group of query head kv head · group + r % group, so each K/V byte is read once per KV
// head); the keys are split p.splits ways (blockIdx.x = query block · splits + split), each
// split writing its normalised O and LSE in fp32 to p.out_partial / p.lse_partial, merged by
// the combine kernel or (p.split_counters) by the block that finishes the tile's last split; and
// K/V rows may come from a paged cache (p.block_table).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/params.h"
#include "common/philox.h"
#include "cuda/common/masking.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/common/split_merge.cuh"
#include "cuda/common/tile_io.cuh"
#include "cuda/sm80/fwd_tile.h"

namespace flashattn::detail::cuda {

// A (rows × kHeadDim) tile of a (rows, heads, dim) operand → shared memory; rows ≥ rows_valid
// and columns ≥ head_dim are zero-filled.
template <class Tile, int kRows, class T>
__device__ __forceinline__ void load_tile_async(T* smem, const T* gmem, int64_t row_stride,
                                                int64_t rows_valid, int head_dim) {
  load_rows_async<Tile::kThreads, kRows, Tile::kHeadDim, Tile::kPitch, Tile::kSwizzle>(
      smem, gmem, row_stride, rows_valid, head_dim);
}

// Shared memory of one block: sQ, sK, sV, and for the decode kernel two buffers of a K/V tile's
// row offsets in a paged cache.
template <class T, class Tile, bool kDecode>
__host__ __device__ constexpr size_t fwd_smem_bytes() {
  return Tile::kSmemElems * sizeof(T) + (kDecode ? 4 * Tile::kBlockN * sizeof(int64_t) : 0);
}

// The decode kernel asks for 2 blocks an SM: its register cap at 4 warps stays 255, and ptxas
// allocates differently than for 1. A cap for 3 (168 registers) spilled 256 bytes at d 128, and
// 3 blocks of 128-key steps ran 20% slower on an H200 than 2 (docs/tuning.md).
template <class T, class Tile, bool kScoreMods, bool kDecode>
__global__ void __launch_bounds__(Tile::kThreads, kDecode ? 2 : 1)
    flash_fwd_kernel(const __grid_constant__ AttentionParams p) {
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kPitch = Tile::kPitch;
  constexpr int kMTiles = Tile::kMTiles, kNTiles = Tile::kNTiles, kDTiles = Tile::kDTiles;
  constexpr float kNegInf = -__builtin_huge_valf();

  // sQ: shared (kBlockM, kPitch)   sK, sV: shared (kBlockN, kPitch)
  // sKOff, sVOff (decode, paged): shared int64 (2, kBlockN), the element offset in k and v of
  // each key row of tile nb, in buffer nb & 1
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kBlockM * kPitch;
  T* sV = sK + kBlockN * kPitch;
  int64_t* sKOff = reinterpret_cast<int64_t*>(sV + kBlockN * kPitch);
  int64_t* sVOff = sKOff + 2 * kBlockN;

  // ---- Block geometry ----
  const int64_t b = blockIdx.z;
  const SequenceInfo seq = sequence_info(p, b);
  const int splits = kDecode ? p.splits : 1;
  const int split = kDecode ? static_cast<int>(blockIdx.x) % splits : 0;
  const bool pack = kDecode && p.pack_gqa;
  const int64_t group = pack ? p.group : 1;   // query heads per tile row block
  const int64_t rows = seq.seqlen_q * group;  // tile rows of this sequence
  // Last query block first: under a causal mask it has the most keys, so the longest blocks start
  // in the first wave and the tail of the grid is short ones.
  const int64_t m0 =
      static_cast<int64_t>(gridDim.x / splits - 1 - blockIdx.x / splits) * kBlockM;
  if (m0 >= rows) return;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  // This warp's rows of the tile and keys of each step: its group's rows, and its share of the
  // keys within the group (Tile::kKeyWarps warps a group; 1: its own rows, all keys).
  constexpr bool kOneGroup = Tile::kKeyWarps == Tile::kWarps;  // (warp < kWarps: no division)
  const int key_warp = kOneGroup ? warp : warp % Tile::kKeyWarps;
  const int warp_row0 = kOneGroup ? 0 : warp / Tile::kKeyWarps * Tile::kWarpRows;
  const int warp_key0 = key_warp * Tile::kWarpKeys;
  const int64_t h = blockIdx.y;                   // the query head (the KV head when packed)
  const int64_t hk = pack ? h : h / p.group;
  // The query rows [q_first, q_last] that this block's tile rows hold.
  const int64_t q_first = m0 / group, q_last = (min(m0 + kBlockM, rows) - 1) / group;

  // Key blocks any row of this block can see: [n_block_min, n_block_max); with a split, the
  // split's share of the sequence's key blocks.
  const BlockRange key_blocks = visible_key_blocks(p, seq, q_first, q_last - q_first + 1, kBlockN);
  int n_block_min = key_blocks.first, n_block_max = key_blocks.end;
  if (kDecode && splits > 1) {  // split s: blocks [s · blocks / splits, (s + 1) · blocks / splits)
    const int64_t blocks = (seq.seqlen_k + kBlockN - 1) / kBlockN;
    n_block_min = max(n_block_min, static_cast<int>(split * blocks / splits));
    n_block_max = max(n_block_min, min(n_block_max, static_cast<int>((split + 1) * blocks / splits)));
  }

  // Packed: the first query head of the KV group (rows pick their head); else the block's head.
  const T* q_seq = static_cast<const T*>(p.q) + b * p.q_stride.batch +
                   seq.q_start * p.q_stride.row + (pack ? hk * group : h) * p.q_stride.head;
  const T* q = q_seq + m0 * p.q_stride.row;
  const bool paged = kDecode && p.block_table != nullptr;
  // Paged: k and v are pages; the page of key j is table[j / page_size].
  const int32_t* table = paged ? p.block_table + b * p.block_table_stride : nullptr;
  const int64_t k_seq = paged ? 0 : b * p.k_stride.batch + seq.k_start * p.k_stride.row;
  const int64_t v_seq = paged ? 0 : b * p.v_stride.batch + seq.k_start * p.v_stride.row;
  const T* k = static_cast<const T*>(p.k) + k_seq + hk * p.k_stride.head;
  const T* v = static_cast<const T*>(p.v) + v_seq + hk * p.v_stride.head;
  const int head_dim = static_cast<int>(p.head_dim);

  // Paged: thread r serves key rows r, r + kThreads, … (kKeyRows of them) of a tile. Their page
  // ids are read from the block table two tiles ahead, into registers (page_of), and become the
  // rows' element offsets in k and v one tile ahead (store_offsets: a division and two products a
  // row, not one a 16-byte chunk), so neither the table's latency nor the arithmetic is on the
  // loads' path. Key indices and page sizes are < 2^31: 32-bit arithmetic; page ids are clamped
  // into the cache.
  constexpr int kKeyRows = (kBlockN + Tile::kThreads - 1) / Tile::kThreads;
  using Pages = int[kKeyRows];
  const int page_size = paged ? static_cast<int>(p.page_size) : 1;
  auto page_of = [&](int nb, Pages& page) {
#pragma unroll
    for (int i = 0; i < kKeyRows; ++i) {
      const int key_row = static_cast<int>(threadIdx.x) + i * Tile::kThreads;
      const int j = nb * kBlockN + key_row;
      page[i] = nb >= n_block_min && key_row < kBlockN && j < seq.seqlen_k ? table[j / page_size] : 0;
    }
  };
  auto store_offsets = [&](int nb, const Pages& page) {
#pragma unroll
    for (int i = 0; i < kKeyRows; ++i) {
      const int key_row = static_cast<int>(threadIdx.x) + i * Tile::kThreads;
      if (key_row >= kBlockN) break;
      const int j = nb * kBlockN + key_row;
      const int row = j % page_size;
      const int pg = min(max(page[i], 0), static_cast<int>(p.num_pages - 1));
      sKOff[(nb & 1) * kBlockN + key_row] = pg * p.k_stride.batch + row * p.k_stride.row;
      sVOff[(nb & 1) * kBlockN + key_row] = pg * p.v_stride.batch + row * p.v_stride.row;
    }
  };
  // K or V rows of tile nb → shared memory (paged: its offsets are in offsets[nb & 1]).
  auto load_keys = [&](T* dst, const T* src, OperandStrides stride, const int64_t* offsets,
                       int nb) {
    const int64_t n0 = static_cast<int64_t>(nb) * kBlockN;
    if (paged) {
      const int64_t* rows = offsets + (nb & 1) * kBlockN;
      load_rows_async_indexed<Tile::kThreads, kBlockN, Tile::kHeadDim, kPitch, Tile::kSwizzle>(
          dst, [=](int r) { return src + rows[r]; }, src,
          static_cast<int>(min(seq.seqlen_k - n0, int64_t{kBlockN})), head_dim);
    } else {
      load_tile_async<Tile, kBlockN>(dst, src + n0 * stride.row, stride.row, seq.seqlen_k - n0,
                                     head_dim);
    }
  };

  // Each of this thread's fragment rows: its tile row, its query row (relative to q_first) and
  // its query head. Only packed rows need a table (the decode kernel's few rows); otherwise they
  // are the tile row and the block's head, computed where used.
  constexpr int kTableRows = kDecode ? kMTiles : 1;
  int packed_q[kTableRows][2];
  int64_t packed_head[kTableRows][2];
  auto tile_row = [&](int mt, int rh) { return warp_row0 + mt * 16 + g + 8 * rh; };
#pragma unroll
  for (int mt = 0; mt < kTableRows; ++mt) {
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const int64_t r = m0 + tile_row(mt, rh);
      packed_q[mt][rh] = static_cast<int>(r / group - q_first);
      packed_head[mt][rh] = hk * group + r % group;
    }
  }
  auto row_q = [&](int mt, int rh) {
    return pack ? packed_q[kDecode ? mt : 0][rh] : tile_row(mt, rh);
  };
  auto row_head = [&](int mt, int rh) { return pack ? packed_head[kDecode ? mt : 0][rh] : h; };

  // Per-row state. Scores are kept in "raw" units u; exp2(u · mul) is the unnormalised P.
  float acc_o[kMTiles][kDTiles][4];  // registers (kWarpRows, kHeadDim) per warp
  float row_max[kMTiles][2], row_sum[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mt][dt][e] = 0.0f;
    }
    row_max[mt][0] = row_max[mt][1] = kNegInf;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
  }
  const float mul = kScoreMods ? kLog2e : p.scale_log2;
  // ALiBi slopes: one per row when query heads are packed, else the block's.
  constexpr int kSlopeRows = kDecode ? kMTiles : 1;
  float alibi_slope[kSlopeRows][2] = {};
  if (kScoreMods && p.alibi_slopes != nullptr) {
#pragma unroll
    for (int mt = 0; mt < kSlopeRows; ++mt) {
#pragma unroll
      for (int rh = 0; rh < 2; ++rh) {
        alibi_slope[mt][rh] = p.alibi_slopes[b * p.alibi_batch_stride + row_head(mt, rh)];
      }
    }
  }
  const uint64_t dropout_stream_id = detail::dropout_stream(p.dropout_offset, b, h, p.heads_q);

  // ---- Prologue: Q and the last K block in flight ----
  if (n_block_max > n_block_min) {
    if (pack) {
      load_rows_async_indexed<Tile::kThreads, kBlockM, Tile::kHeadDim, kPitch, Tile::kSwizzle>(
          sQ,
          [=](int r) {
            const int64_t row = m0 + r;
            return q_seq + (row / group) * p.q_stride.row + (row % group) * p.q_stride.head;
          },
          q_seq, static_cast<int>(min(rows - m0, int64_t{kBlockM})), head_dim);
    } else {
      load_tile_async<Tile, kBlockM>(sQ, q, p.q_stride.row, seq.seqlen_q - m0, head_dim);
    }
    if (paged) {  // the first tile's offsets (waiting for its table entries), before its K
      Pages first;
      page_of(n_block_max - 1, first);
      store_offsets(n_block_max - 1, first);
      __syncthreads();
    }
    load_keys(sK, k, p.k_stride, sKOff, n_block_max - 1);
    cp_async_commit();
    if (kDecode) {  // the decode kernel keeps a step's K and V in flight together
      load_keys(sV, v, p.v_stride, sVOff, n_block_max - 1);
      cp_async_commit();
    }
  }
  Pages next_page = {};  // tile nb - 1's, in flight
  if (paged) page_of(n_block_max - 2, next_page);

  // ---- Main loop: key blocks from last to first ----
  for (int nb = n_block_max - 1; nb >= n_block_min; --nb) {
    const int64_t n0 = static_cast<int64_t>(nb) * kBlockN;
    // Every fragment read's rows, modulo 8 (the swizzle key; unused by padded tiles).
    const int lane_row8 = Tile::kSwizzle ? opaque(lane % 8) : lane % 8;
    if constexpr (kDecode) {
      cp_async_wait<1>();  // K(nb) (and Q) landed; V(nb), issued after it, may be in flight
      __syncthreads();     // … for every thread
    } else {
      cp_async_wait<0>();  // K(nb) (and Q) landed
      __syncthreads();     // … for every thread; and everyone is done with V(nb + 1)
      load_keys(sV, v, p.v_stride, sVOff, nb);
      cp_async_commit();
    }
    // Tile nb - 1's offsets, into the buffer of tile nb + 1 (whose loads are all issued; the
    // barrier before K(nb - 1) publishes them), and tile nb - 2's table entries.
    if (paged && nb > n_block_min) {
      store_offsets(nb - 1, next_page);
      page_of(nb - 2, next_page);
    }

    // S = Q K(nb)ᵀ: registers (kWarpRows, kBlockN) per warp
    float s[kMTiles][kNTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
      }
    }
#pragma unroll
    for (int kk = 0; kk < Tile::kHeadDim / 16; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        ldmatrix_x4(a[mt], sQ + Tile::at(warp_row0 + mt * 16 + lane % 16, kk * 16 + (lane / 16) * 8,
                                         lane_row8));
      }
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        uint32_t bk[4];
        ldmatrix_x4(bk, sK + Tile::at(warp_key0 + np * 16 + (lane / 16) * 8 + lane % 8,
                                      kk * 16 + ((lane / 8) % 2) * 8, lane_row8));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          mma_16816<T>(s[mt][2 * np], a[mt], bk[0], bk[1]);
          mma_16816<T>(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
        }
      }
    }

    // Score modifications and the mask (only boundary blocks pay for the mask), in query rows:
    // the geometry's m0 is q_first, each fragment row's query is row_q (packed rows repeat one).
    const int q_rows = static_cast<int>(q_last - q_first + 1);
    const bool need_mask = block_needs_mask(p, seq, q_first, n0, q_rows, kBlockN);
    if (kScoreMods || need_mask) {
      const ScoreGeometry geo = score_geometry(p, seq, q_first, n0, q_rows, kBlockN, 0, 0);
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
          const RowWindow row = row_window(geo, row_q(mt, rh));
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int j = warp_key0 + nt * 8 + 2 * t + e;
              float& x = s[mt][nt][2 * rh + e];
              float dcap;
              if constexpr (kScoreMods) {
                x = modify_score_exact(p, x, alibi_slope[kDecode ? mt : 0][kDecode ? rh : 0],
                                       row.diag, j, dcap);
              }
              if (need_mask && row.hides(j)) x = kNegInf;
            }
          }
        }
      }
    }

    // Online softmax: new row max, rescale of the sum and of O, P = exp2(u·mul − max·mul).
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int rh = 0; rh < 2; ++rh) {
        float m_new = row_max[mt][rh];
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          m_new = fmaxf(m_new, fmaxf(s[mt][nt][2 * rh], s[mt][nt][2 * rh + 1]));
        }
        m_new = quad_max(m_new);
        const float m_scaled = m_new == kNegInf ? 0.0f : m_new * mul;
        const float correction = exp2_approx(row_max[mt][rh] * mul - m_scaled);
        row_max[mt][rh] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[mt][nt][2 * rh + e];
            x = exp2_approx(fmaf(x, mul, -m_scaled));
            sum += x;
          }
        }
        row_sum[mt][rh] = row_sum[mt][rh] * correction + sum;
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          acc_o[mt][dt][2 * rh] *= correction;
          acc_o[mt][dt][2 * rh + 1] *= correction;
        }
      }
    }

    // Dropout (docs/dropout.md): one Philox call per 16×16 block gives this lane its 8 elements.
    if (kScoreMods && !kDecode && p.dropout_p > 0.0f) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const uint32_t row_block = static_cast<uint32_t>((m0 + warp_row0 + mt * 16) >> 4);
#pragma unroll
        for (int np = 0; np < kNTiles / 2; ++np) {
          const uint32_t col_block = static_cast<uint32_t>((n0 >> 4) + np);
          const uint32_t keep =
              dropout_keep_bits(p.dropout_seed, dropout_stream_id, row_block, col_block,
                                static_cast<uint32_t>(lane), p.dropout_threshold);
#pragma unroll
          for (int slot = 0; slot < 8; ++slot) {
            if (!((keep >> slot) & 1u)) s[mt][2 * np + slot / 4][slot % 4] = 0.0f;
          }
        }
      }
    }

    cp_async_wait<0>();  // V(nb) landed
    __syncthreads();     // … for every thread; and everyone is done with K(nb)
    if (nb > n_block_min) {
      load_keys(sK, k, p.k_stride, sKOff, nb - 1);
      cp_async_commit();
    }

    // O += P V(nb): P goes from the S accumulator straight into A fragments.
#pragma unroll
    for (int kk = 0; kk < Tile::kWarpKeys / 16; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        a[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, sV + Tile::at(warp_key0 + kk * 16 + ((lane / 8) % 2) * 8 + lane % 8,
                                            dp * 16 + (lane / 16) * 8, lane_row8));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          mma_16816<T>(acc_o[mt][2 * dp], a[mt], bv[0], bv[1]);
          mma_16816<T>(acc_o[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
        }
      }
    }
    if (kDecode && nb > n_block_min) {
      __syncthreads();  // everyone is done with V(nb)
      load_keys(sV, v, p.v_stride, sVOff, nb - 1);
      cp_async_commit();
    }
  }

  // The row sums over this warp's keys (a quad's lanes hold parts of a row).
  float row_l[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    row_l[mt][0] = quad_sum(row_sum[mt][0]);
    row_l[mt][1] = quad_sum(row_sum[mt][1]);
  }
  // Warps that split the keys merge their (max, sum, O) of each row through shared memory (all of
  // it is free after the barrier: no load is in flight after the last step); key warp w of a group
  // then owns the output columns of the n8 tiles dt ≡ w (mod kKeyWarps) of the group's rows, and
  // key warp 0 writes their LSE (writes_lse).
  auto owns = [&](int dt) { return !Tile::kSplitKeys || dt % Tile::kKeyWarps == key_warp; };
  if constexpr (Tile::kSplitKeys) {
    constexpr int kKeyWarps = Tile::kKeyWarps, kOPitch = Tile::kHeadDim + 8;
    static_assert((2 + kOPitch) * kKeyWarps * kBlockM * sizeof(float) <=
                      fwd_smem_bytes<T, Tile, kDecode>(),
                  "the warps' partial rows fit where Q, K and V were");
    float* sMax = reinterpret_cast<float*>(sQ);  // (kKeyWarps, kBlockM)
    float* sSum = sMax + kKeyWarps * kBlockM;     // (kKeyWarps, kBlockM)
    float* sO = sSum + kKeyWarps * kBlockM;       // (kKeyWarps, kBlockM, kOPitch)
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int rh = 0; rh < 2; ++rh) {
        const int r = tile_row(mt, rh);  // the warps of a group hold the same rows
        if (t == 0) {
          sMax[key_warp * kBlockM + r] = row_max[mt][rh];
          sSum[key_warp * kBlockM + r] = row_l[mt][rh];
        }
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          *reinterpret_cast<float2*>(sO + (key_warp * kBlockM + r) * kOPitch + dt * 8 + 2 * t) =
              make_float2(acc_o[mt][dt][2 * rh], acc_o[mt][dt][2 * rh + 1]);
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int rh = 0; rh < 2; ++rh) {
        const int r = tile_row(mt, rh);
        float m = kNegInf;
#pragma unroll
        for (int w = 0; w < kKeyWarps; ++w) m = fmaxf(m, sMax[w * kBlockM + r]);
        const float m_scaled = m == kNegInf ? 0.0f : m * mul;
        float weight[kKeyWarps], l = 0.0f;
#pragma unroll
        for (int w = 0; w < kKeyWarps; ++w) {
          weight[w] = exp2_approx(sMax[w * kBlockM + r] * mul - m_scaled);
          l += weight[w] * sSum[w * kBlockM + r];
        }
        row_max[mt][rh] = m;
        row_l[mt][rh] = l;
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          if (!owns(dt)) continue;
          float2 o = make_float2(0.0f, 0.0f);
#pragma unroll
          for (int w = 0; w < kKeyWarps; ++w) {
            const float2 x =
                *reinterpret_cast<const float2*>(sO + (w * kBlockM + r) * kOPitch + dt * 8 + 2 * t);
            o.x += weight[w] * x.x;
            o.y += weight[w] * x.y;
          }
          acc_o[mt][dt][2 * rh] = o.x;
          acc_o[mt][dt][2 * rh + 1] = o.y;
        }
      }
    }
  }

  // ---- Epilogue: the one rescale by 1/l, O and LSE out (a split: fp32 partials) ----
  const bool writes_lse = t == 0 && key_warp == 0;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const float l = row_l[mt][rh];
      if (m0 + warp_row0 + mt * 16 + g + 8 * rh >= rows) continue;
      const int64_t i = q_first + row_q(mt, rh), head = row_head(mt, rh);
      // l = 0: no visible key, O = 0 and LSE −inf. A NaN score makes l NaN (fmaxf passes it
      // over in the max, exp2 does not), so O and LSE come out NaN, as plain attention's.
      const float inv = l == 0.0f ? 0.0f : p.dropout_scale / l;
      const float lse = l == 0.0f ? kNegInf : row_max[mt][rh] * mul * kLn2 + logf(l);
      if (kDecode && splits > 1) {  // padded batches only: row b · seqlen_q + i
        const int64_t slot = split_slot(p, split, head, b, i);
        float* o = p.out_partial + slot * p.head_dim_v;
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          const int col = dt * 8 + 2 * t;
          if (owns(dt) && col < head_dim) {
            *reinterpret_cast<float2*>(o + col) =
                make_float2(acc_o[mt][dt][2 * rh] * inv, acc_o[mt][dt][2 * rh + 1] * inv);
          }
        }
        if (writes_lse) p.lse_partial[slot] = lse;
        continue;
      }
      T* o = static_cast<T*>(p.out) + b * p.out_stride.batch + (seq.q_start + i) * p.out_stride.row +
             head * p.out_stride.head;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        const int col = dt * 8 + 2 * t;
        if (owns(dt) && col < head_dim) {
          *reinterpret_cast<uint32_t*>(o + col) =
              pack2<T>(acc_o[mt][dt][2 * rh] * inv, acc_o[mt][dt][2 * rh + 1] * inv);
        }
      }
      if (writes_lse && p.lse != nullptr) {
        p.lse[b * p.lse_batch_stride + head * p.lse_head_stride + seq.q_start + i] = lse;
      }
    }
  }

  // ---- A split merged in the kernel: the block that finishes a tile's last split merges ----
  // (the threadfence reduction of the CUDA programming guide: partials, fence, count; the block
  // that counts last fences again and reads the others' partials through L2).
  if constexpr (kDecode) {
    if (splits > 1 && p.split_counters != nullptr) {
      constexpr int kWeightsOffset = 16;  // bytes: the flag below, then the merge's weights
      static_assert(kWeightsOffset + kBlockM * kMergeMaxSplits * sizeof(float) <=
                        fwd_smem_bytes<T, Tile, kDecode>(),
                    "the merge's weights fit where Q, K and V were");
      int* const is_last = reinterpret_cast<int*>(smem_raw);
      __threadfence();  // this thread's partials, visible to every SM before the count
      __syncthreads();  // … every thread's; and shared memory is free
      if (threadIdx.x == 0) {
        const unsigned tiles_x = gridDim.x / splits;
        int* const counter =
            p.split_counters + blockIdx.x / splits + tiles_x * (blockIdx.y + gridDim.y * blockIdx.z);
        const bool last = atomicAdd(counter, 1) == splits - 1;
        if (last) *counter = 0;  // as the call found it, for the next call on this workspace
        *is_last = last;
      }
      __syncthreads();
      if (*is_last == 0) return;
      __threadfence();  // the other splits' partials, after their counts
      // Tile row r: query row i and head of the partials' slots, as the epilogue wrote them.
      auto query_row = [&](int r) { return pack ? (m0 + r) / group : m0 + r; };
      auto head_of = [&](int r) { return pack ? hk * group + (m0 + r) % group : h; };
      auto slot0 = [&](int r) { return split_slot(p, 0, head_of(r), b, query_row(r)); };
      const int64_t split_slots = split_slot(p, 1, 0, 0, 0);
      merge_split_rows<T, Tile::kThreads, kBlockM>(
          static_cast<int>(min(rows - m0, int64_t{kBlockM})), splits, head_dim,
          reinterpret_cast<float*>(smem_raw + kWeightsOffset),
          [&](int r) { return p.out_partial + slot0(r) * p.head_dim_v; }, split_slots * p.head_dim_v,
          [&](int r) { return p.lse_partial + slot0(r); }, split_slots,
          [&](int r) {
            return static_cast<T*>(p.out) + b * p.out_stride.batch +
                   (seq.q_start + query_row(r)) * p.out_stride.row + head_of(r) * p.out_stride.head;
          },
          [&](int r) {
            return p.lse == nullptr ? nullptr
                                    : p.lse + b * p.lse_batch_stride + head_of(r) * p.lse_head_stride +
                                          seq.q_start + query_row(r);
          });
    }
  }
}

}  // namespace flashattn::detail::cuda
